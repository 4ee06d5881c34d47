"""The per-client state store: init, gather, scatter (padding ids dropped), nbytes."""

import jax.numpy as jnp
import numpy as np

from fedjax_med.algorithms import client_store

N = 5


def make_store():
  template = {"w": jnp.zeros((2, 3)), "n": jnp.zeros((), jnp.int32)}
  store = client_store.init(template, N)
  # Row i holds i everywhere, so a gathered row names its client.
  return {"w": store["w"] + jnp.arange(N, dtype=jnp.float32)[:, None, None],
          "n": store["n"] + jnp.arange(N, dtype=jnp.int32)}


def test_init_stacks_copies_of_the_template():
  store = client_store.init({"w": jnp.full((2, 3), 7.0), "b": jnp.ones((4,), jnp.bfloat16)}, N)
  assert store["w"].shape == (N, 2, 3) and store["b"].shape == (N, 4)
  assert store["b"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(store["w"], 7.0)


def test_gather_reads_rows_and_padding_reads_row_zero():
  rows = client_store.gather(make_store(), jnp.array([3, -1, 0, 4]))
  np.testing.assert_array_equal(rows["n"], [3, 0, 0, 4])
  np.testing.assert_array_equal(rows["w"][:, 0, 0], [3.0, 0.0, 0.0, 4.0])
  assert rows["w"].shape == (4, 2, 3)


def test_scatter_writes_valid_rows_and_drops_padding():
  store = make_store()
  ids = jnp.array([3, -1, 1, 0])
  valid = jnp.array([True, False, True, False])  # row 3: a real id but a zero-weight client
  new = {"w": jnp.full((4, 2, 3), -1.0) * jnp.arange(1, 5, dtype=jnp.float32)[:, None, None],
         "n": jnp.array([30, 99, 10, 77], jnp.int32)}
  out = client_store.scatter(store, ids, new, valid)
  # Client 3 <- row 0, client 1 <- row 2; the padding row (-1) and invalid row (id 0) write nothing.
  np.testing.assert_array_equal(out["n"], [0, 10, 2, 30, 4])
  np.testing.assert_array_equal(out["w"][:, 0, 0], [0.0, -3.0, 2.0, -1.0, 4.0])
  # Unsampled rows (2, 4) and the dropped ones (0) are bit-identical to before.
  for i in (0, 2, 4):
    np.testing.assert_array_equal(out["w"][i], store["w"][i])
  # A -1 id with valid=True is still dropped (it must not wrap around to row N - 1).
  out2 = client_store.scatter(store, jnp.array([-1]), {"w": jnp.full((1, 2, 3), 9.0),
                                                     "n": jnp.array([9], jnp.int32)},
                              jnp.array([True]))
  np.testing.assert_array_equal(out2["n"], store["n"])
  np.testing.assert_array_equal(out2["w"], store["w"])


def test_scatter_casts_rows_to_the_store_dtype():
  store = client_store.init({"w": jnp.zeros((2,), jnp.bfloat16)}, N)
  out = client_store.scatter(store, jnp.array([2]), {"w": jnp.ones((1, 2), jnp.float32)},
                             jnp.array([True]))
  assert out["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(out["w"][2], [1.0, 1.0])


def test_nbytes():
  # N * (6 float32 + 1 int32) = 5 * (24 + 4) bytes.
  assert client_store.nbytes(make_store()) == N * (6 * 4 + 4)
  assert client_store.nbytes(client_store.init({"x": jnp.zeros((3,), jnp.bfloat16)}, 7)) == 7 * 3 * 2
