"""The round cut in two (site half + server half) equals the one-jit round, in-process."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms, compression, types
from fedjax_med.algorithms import base
from fedjax_med.deploy import rounds
from tests import testing

N = 6  # clients in the federation (state rows)


def _batch(round_idx: int) -> types.ClientBatch:
  """C=4 slots: three sampled clients (one with a padded step) and one padding slot."""
  clients = testing.make_clients(seed=round_idx + 1)
  ids = np.sort(np.random.default_rng(round_idx).choice(N, 3, replace=False))
  return clients._replace(client_id=np.array([*ids, -1], np.int32))


def _deployed_round(parts, state, clients, rows, lost=()):
  """Every real slot through site_update (its row from ``rows``), then server_round."""
  keys = base.round_keys(state, clients.weight.shape[0])
  shared = state._replace(client_state=None)
  site = jax.jit(rounds.site_update, static_argnums=0)
  deltas, changes, weight, loss, steps, norms = [], [], [], [], [], []
  for c in range(clients.weight.shape[0]):
    cid = int(clients.client_id[c])
    data = {"image": clients.image[c], "label": clients.label[c], "mask": clients.mask[c]}
    row = rows.get(max(cid, 0))  # a padding slot reads row 0, as client_store.gather
    clip = None if state.privacy is None else state.privacy.clip_norm
    res = site(parts, shared, data, row, keys[c], clip)
    answered = clients.weight[c] > 0 and cid not in lost and bool(res.ok)
    if answered and row is not None:
      rows[cid] = res.new_row
    deltas.append(rounds.decode_upload(parts.plan.compressor, res.upload, state.params))
    changes.append(res.row_change)
    weight.append(clients.weight[c] if answered else 0.0)
    loss.append(res.loss)
    steps.append(res.steps)
    norms.append(res.norm)
  stack = lambda xs: None if xs[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
  replies = rounds.Replies(stack(deltas), stack(changes), jnp.asarray(weight, jnp.float32),
                           jnp.stack(loss), jnp.stack(steps), jnp.stack(norms))
  return jax.jit(rounds.server_round, static_argnums=0)(parts, state, replies)[0]


def _rows(state):
  if state.client_state is None:
    return {}
  return {i: jax.tree.map(lambda x, i=i: x[i], state.client_state) for i in range(N)}


@pytest.mark.parametrize("name,compressor,ef", [
    ("fedavg", None, False),
    ("scaffold", None, False),
    ("fedavg", compression.topk(0.3), True),
    ("fedavg", compression.quantize(8), False),
])
def test_site_plus_server_equals_the_round(name, compressor, ef):
  plan = algorithms.RoundPlan(num_clients=N, compressor=compressor, error_feedback=ef)
  alg = algorithms.build(name, testing.linear_loss, optax.sgd(testing.LR),
                         optax.sgd(1.0, momentum=0.5), plan=plan,
                         **({"client_lr": testing.LR} if name == "scaffold" else {}))
  parts = base.round_parts(alg)
  sim = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  dep = sim._replace(client_state=None)
  rows = _rows(sim)
  for r in range(3):
    clients = _batch(r)
    sim = jax.jit(alg.round)(sim, clients)[0]
    dep = _deployed_round(parts, dep, clients, rows)
  chex.assert_trees_all_close(dep.params, sim.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(dep.server, sim.server, rtol=1e-5, atol=1e-6)
  assert int(dep.round) == 3


@pytest.mark.parametrize("adaptive", [False, True])
def test_client_level_dp_site_clips_and_server_noises_as_the_round(adaptive):
  """DP-FedAvg cut in two: each site clips its delta to the server's clip norm, the server
  adds the round's noise (and moves the clip norm: adaptive clipping) as the simulation."""
  from fedjax_med.privacy import dp_fedavg

  dp = dp_fedavg.ClientDP(noise_multiplier=0.7, expected_clients=3.0, clip_norm=0.05,
                          target_quantile=0.5 if adaptive else None, clip_lr=0.2,
                          count_noise=0.5 if adaptive else None)
  plan = algorithms.RoundPlan(num_clients=N, client_dp=dp)
  alg = algorithms.build("fedavg", testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
                         plan=plan)
  parts = base.round_parts(alg)
  sim = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  dep = sim
  for r in range(3):
    clients = _batch(r)
    sim = jax.jit(alg.round)(sim, clients)[0]
    dep = _deployed_round(parts, dep, clients, {})
  chex.assert_trees_all_close(dep.params, sim.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(dep.privacy, sim.privacy, rtol=1e-5, atol=1e-6)
  if adaptive:  # the clip norm moved
    assert float(dep.privacy.clip_norm) != 0.05


def test_a_lost_reply_is_a_dropped_client():
  """A site that never answers weighs 0: as the simulation's dropout (weight 0, row kept)."""
  plan = algorithms.RoundPlan(num_clients=N)
  alg = algorithms.build("scaffold", testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
                         plan=plan, client_lr=testing.LR)
  parts = base.round_parts(alg)
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  clients = _batch(0)
  lost = int(clients.client_id[1])
  rows = _rows(state)
  dep = _deployed_round(parts, state._replace(client_state=None), clients, rows, lost=(lost,))
  dropped = clients._replace(weight=clients.weight.copy(), mask=clients.mask.copy())
  dropped.weight[1] = 0.0
  dropped.mask[1] = False
  sim = jax.jit(alg.round)(state, dropped)[0]
  chex.assert_trees_all_close(dep.params, sim.params, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(dep.server, sim.server, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(rows[lost], jax.tree.map(lambda x: x[lost], sim.client_state))


def test_round_parts_of_an_algorithm_and_of_a_baseline():
  alg = algorithms.fedavg(testing.linear_loss, optax.sgd(0.1), optax.sgd(1.0))
  parts = base.round_parts(alg)
  assert parts.server_fn is None and not parts.uniform and parts.plan == base.RoundPlan()
  with pytest.raises(ValueError, match="not a federated_round"):
    base.round_parts(algorithms.centralized(testing.linear_loss, optax.sgd(0.1)))


def test_arrays_round_trip_and_refuse_other_shapes():
  params = testing.make_params()
  arrays = rounds.to_arrays(params)
  chex.assert_trees_all_equal(rounds.from_arrays(params, arrays), params)
  with pytest.raises(ValueError, match="expected"):
    rounds.from_arrays(params, arrays[:1])
  with pytest.raises(ValueError, match="array 0"):
    rounds.from_arrays(params, [a.astype(np.float64) for a in arrays])
