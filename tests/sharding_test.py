"""Sharded round (8 fake CPU devices, see conftest) == unsharded round == chunked round."""

import chex
import jax
import optax
import pytest

from fedjax_med import algorithms, sharding
from tests.testing import LR, linear_loss, make_clients, make_params


def test_eight_fake_devices_are_configured():
  assert jax.device_count() == 8, "tests/conftest.py must set 8 host devices before jax loads"


# Adam's server step under sharding is also checked by the (fast) contract test of
# ``fedadam``; the everyday loop runs it with one chunk size, CI with all.
@pytest.mark.parametrize("chunk,server_tx", [
    (None, "sgd"), (2, "sgd"), (8, "sgd"), (8, "adam"),
    pytest.param(None, "adam", marks=pytest.mark.slow),
    pytest.param(2, "adam", marks=pytest.mark.slow),
])
def test_sharded_round_equals_unsharded(chunk, server_tx):
  server = optax.sgd(1.0, momentum=0.9) if server_tx == "sgd" else optax.adam(0.05)
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), server, plan=algorithms.RoundPlan(chunk_size=chunk))
  mesh = sharding.make_mesh()
  clients = [make_clients(num_clients=16, seed=r) for r in range(2)]

  state = alg.init(make_params(), jax.random.PRNGKey(0))
  plain = jax.jit(alg.round)
  for c in clients:
    state, metrics = plain(state, c)

  sharded_state = sharding.replicate(alg.init(make_params(), jax.random.PRNGKey(0)), mesh)
  sharded_round = sharding.jit_round(alg.round, mesh)
  for c in clients:
    batch = sharding.shard_clients(c, mesh)
    assert len(batch.image.sharding.device_set) == 8
    sharded_state, sharded_metrics = sharded_round(sharded_state, batch)

  chex.assert_trees_all_close(jax.device_get(sharded_state), jax.device_get(state), rtol=1e-5,
                              atol=1e-6)
  chex.assert_trees_all_close(jax.device_get(sharded_metrics), jax.device_get(metrics),
                              rtol=1e-5, atol=1e-6)


def test_pad_multiple_and_uneven_clients_error():
  mesh = sharding.make_mesh()
  assert sharding.pad_multiple(13, mesh) == 16
  assert sharding.pad_multiple(13, mesh, chunk_size=4) == 16
  assert sharding.pad_multiple(17, mesh, chunk_size=6) == 24
  with pytest.raises(ValueError, match="zero-weight"):
    sharding.shard_clients(make_clients(num_clients=4), mesh)
