"""SCAFFOLD vs a Python-loop reference of Karimireddy et al. (ICML 2020), Alg. 1, option II.

Client i (from the server model x, with control variates c and c_i):
  y <- y - lr (g_i(y) + c - c_i)                    for each of its K real steps
  c_i+ <- c_i - c + (x - y) / (K lr)                (K = 0: c_i kept)
Server (eta_g = 1), uniform over the real sampled clients S (weight > 0), as the paper:
  x <- x + (1/|S|) sum_{i in S} (y_i - x)
  c <- c + (1/N) sum_{i in S} (c_i+ - c_i)
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_med import algorithms
from fedjax_med.checkpoint import Checkpointer
from tests.testing import (
  LR,
  ROUNDS,
  C,
  N,
  linear_loss,
  make_params,
  real_steps,
  reference_grad,
  reference_round,
  sampled_clients,
  stack_rows,
  step_batch,
  to_numpy,
  weighted_average,
)


def grad(w, batch):
  return reference_grad(linear_loss)(w, batch)[0]


def scaffold_clients(r):
  """The sampled rounds; in round 2 client 2 (row 0, seen in round 0) has weight but no data."""
  clients = sampled_clients(r)
  if r == 2:
    mask = clients.mask.copy()
    mask[0] = False
    clients = clients._replace(mask=mask)
    assert clients.weight[0] > 0 and clients.client_id[0] == 2
  return clients


class ScaffoldReference:
  """The paper's server and clients, with ``c_i`` in a dict keyed by client id."""

  def __init__(self, params):
    params = to_numpy(params)
    zeros = jax.tree.map(np.zeros_like, params)
    self.x, self.c = params, zeros
    self.c_i = {i: zeros for i in range(N)}

  def round(self, clients):
    ys, weights, c_changes = [], [], []
    for row in range(C):
      if clients.weight[row] == 0:  # padding client
        continue
      cid = int(clients.client_id[row])
      c_i = self.c_i[cid]
      y, k = self.x, 0
      for s in real_steps(clients, row):
        g = grad(y, step_batch(clients, row, s))
        y = jax.tree.map(lambda yy, gg, cc, ci: yy - LR * (gg + cc - ci), y, g, self.c, c_i)
        k += 1
      if k > 0:
        new_c_i = jax.tree.map(lambda ci, cc, xx, yy, k=k: ci - cc + (xx - yy) / (k * LR),
                               c_i, self.c, self.x, y)
      else:
        new_c_i = c_i
      c_changes.append(jax.tree.map(np.subtract, new_c_i, c_i))
      self.c_i[cid] = new_c_i
      ys.append(y)
      weights.append(1.0)  # uniform, whatever the client's size
    mean_step = weighted_average([jax.tree.map(np.subtract, y, self.x) for y in ys], weights)
    self.x = jax.tree.map(np.add, self.x, mean_step)
    self.c = jax.tree.map(lambda cc, *d: cc + sum(d) / N, self.c, *c_changes)


def make_scaffold(chunk=None):
  return algorithms.scaffold(linear_loss, optax.sgd(LR), optax.sgd(1.0), client_lr=LR,
                             plan=algorithms.RoundPlan(num_clients=N, chunk_size=chunk))


@functools.cache
def scaffold_round(chunk=None):
  """``(init, jitted round)``, shared by the tests (one compile per chunk size)."""
  alg = make_scaffold(chunk)
  return alg.init, jax.jit(alg.round)


def test_scaffold_matches_reference_loop():
  init, round_fn = scaffold_round()
  state = init(make_params(), jax.random.PRNGKey(0))
  ref = ScaffoldReference(make_params())
  for r in range(ROUNDS):
    clients = scaffold_clients(r)
    state, metrics = round_fn(state, clients)
    ref.round(clients)
    # float32 reference vs the scanned/vmapped round: rtol 1e-5, atol 1e-6 (params, c and every c_i).
    chex.assert_trees_all_close(state.params, ref.x, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.server, ref.c, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.client_state.algorithm, stack_rows(ref.c_i), rtol=1e-5, atol=1e-6)
  assert int(state.round) == ROUNDS
  np.testing.assert_array_equal(metrics.client_steps, [0, 2, 3, 0])
  # Client 0 was sampled once (round 0), client 2's round-0 c_i survived its empty round 2.
  assert float(jnp.abs(state.client_state.algorithm["w"][0]).sum()) > 0
  chex.assert_trees_all_close(jax.tree.map(lambda x: x[2], state.client_state.algorithm), ref.c_i[2],
                              rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(ref.c_i[2]["w"]).sum()) > 0


def test_scaffold_round_one_equals_fedavg_with_identical_clients():
  clients = sampled_clients(0)
  same = lambda x: np.broadcast_to(x[:1], x.shape).copy()  # noqa: E731
  mask = same(clients.mask)
  mask[3] = False  # keep the padding client empty
  clients = clients._replace(image=same(clients.image), label=same(clients.label), mask=mask)
  init, round_fn = scaffold_round()
  state, _ = round_fn(init(make_params(), jax.random.PRNGKey(0)), clients)
  # c = c_i = 0 in round 1, so every corrected gradient is the plain gradient: FedAvg's
  # reference loop (server sgd(1.0)); rtol 1e-5, atol 1e-6.
  fedavg_params = reference_round(linear_loss, make_params(), clients, lambda p, g: (
      jax.tree.map(lambda x, d: x - d, p, g), None))[0]
  chex.assert_trees_all_close(state.params, fedavg_params, rtol=1e-5, atol=1e-6)
  # Identical clients get identical c_i+; c = (3 real clients / N) c_i+.
  c_0 = jax.tree.map(lambda x: x[0], state.client_state.algorithm)
  for cid in (4, 2):
    chex.assert_trees_all_close(jax.tree.map(lambda x, i=cid: x[i], state.client_state.algorithm), c_0,
                                rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(state.server, jax.tree.map(lambda x: 3 / N * x, c_0),
                              rtol=1e-5, atol=1e-6)


def test_scaffold_round_compiles_once_over_three_rounds():
  alg = make_scaffold()
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  for r in range(ROUNDS):
    state, _ = round_fn(state, scaffold_clients(r))
  assert int(state.round) == ROUNDS


def test_scaffold_chunked_equals_unchunked():
  results = []
  for chunk in (None, 2):
    init, round_fn = scaffold_round(chunk)
    state = init(make_params(), jax.random.PRNGKey(0))
    for r in range(2):
      state, metrics = round_fn(state, scaffold_clients(r))
    results.append((state, metrics))
  for other in results[1:]:
    # Same arithmetic in a different batching: rtol 1e-5, atol 1e-6.
    chex.assert_trees_all_close(results[0], other, rtol=1e-5, atol=1e-6)


def test_scaffold_checkpoint_resume_is_exact(tmp_path):
  init, round_fn = scaffold_round()
  state = init(make_params(), jax.random.PRNGKey(0))
  for r in range(2):
    state, _ = round_fn(state, scaffold_clients(r))
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(state)
  template = init(make_params(), jax.random.PRNGKey(1))
  restored = ckpt.restore(template)
  ckpt.close()
  assert type(restored) is type(state)
  chex.assert_trees_all_equal(restored, state)
  assert float(jnp.abs(restored.server["w"]).sum()) > 0
  resumed, _ = round_fn(restored, scaffold_clients(2))
  straight, _ = round_fn(state, scaffold_clients(2))
  chex.assert_trees_all_equal(resumed, straight)


def test_scaffold_diagnostics_measure_the_control_variates():
  alg = make_scaffold()
  init, round_fn = scaffold_round()
  state = init(make_params(), jax.random.PRNGKey(0))
  for r in range(ROUNDS):
    state, _ = round_fn(state, scaffold_clients(r))
  got = jax.jit(alg.diagnostics)(state)
  c = np.concatenate([np.ravel(state.server[k]) for k in ("b", "w")])
  rows = state.client_state.algorithm
  drift = [np.linalg.norm(np.concatenate([np.ravel(rows[k][i]) for k in ("b", "w")]) - c)
           for i in range(N)]
  np.testing.assert_allclose(float(got["control_norm"]), np.linalg.norm(c), rtol=1e-5)
  np.testing.assert_allclose(float(got["client_control_drift_max"]), max(drift), rtol=1e-5)
