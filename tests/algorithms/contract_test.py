"""The contract every registered algorithm keeps, checked over the whole registry.

For each name of ``algorithms.registry`` (built with its registry defaults, on
the BatchNorm toy model so FedBN is included): the round compiles once over
three rounds with different sampled clients; the round sharded over 4 devices
equals the unsharded one; a round whose clients are all padding changes
nothing but the round counter; a checkpoint restored into a fresh template
resumes exactly; the stacked aggregation path equals the streamed one; and a
client learning-rate schedule over the rounds equals rebuilding the algorithm
each round with that round's learning rate.
The algorithm-specific arithmetic is checked against reference loops in each
algorithm's own test file.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import errors, optimizers, sharding, types
from fedjax_med.algorithms import RoundPlan, aggregators, personal, registry
from fedjax_med.checkpoint import Checkpointer
from tests.testing import LR, ROUNDS, N, bn_loss, bn_params, sampled_clients

NAMES = registry.names()


def build(name: str, lr: float = LR, **plan_kw):
  entry = registry.get(name)
  server = optimizers.server(entry.server.opt, entry.server.lr, entry.server.momentum,
                             entry.server.eps)
  # FedPer / FedRep keep the toy model's dense layer (its "head") per client
  head = personal.matcher("^params/Dense_0/") if entry.personal == "head" else None
  return registry.build(name, bn_loss, optax.sgd(lr), server, client_lr=lr, is_local=head,
                        plan=RoundPlan(num_clients=N, **plan_kw))


def clients_for(name: str, r: int) -> types.ClientBatch:
  """Round ``r``'s sampled clients; the centralized baseline has one pooled "client" (N=1)."""
  clients = sampled_clients(r)
  if registry.get(name).federated:
    return clients
  return clients._replace(client_id=np.where(clients.weight > 0, 0, -1).astype(np.int32))


@functools.cache
def run(name: str, rounds: int = ROUNDS):
  """The states after each round (jitted, traced at most once)."""
  alg = build(name)
  chex.clear_trace_counter()  # every algorithm's round shares base.federated_round's code
  round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  state, states = alg.init(bn_params(), jax.random.PRNGKey(0)), []
  for r in range(rounds):
    state, metrics = round_fn(state, clients_for(name, r))
    states.append(state)
  assert np.isfinite(float(metrics.pseudo_grad_norm))
  return tuple(states)


@pytest.mark.parametrize("name", NAMES)
def test_compiles_once_and_moves_the_model(name):
  states = run(name)
  assert int(states[-1].round) == ROUNDS
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       states[0].params, states[-1].params)
  assert max(jax.tree.leaves(moved)) > 0


@pytest.mark.parametrize("name", NAMES)
def test_sharded_equals_unsharded(name):
  alg = build(name)
  mesh = sharding.make_mesh(4)
  round_fn = sharding.jit_round(alg.round, mesh, donate=False)
  state = sharding.replicate(alg.init(bn_params(), jax.random.PRNGKey(0)), mesh)
  for r in range(ROUNDS):
    state, _ = round_fn(state, sharding.shard_clients(clients_for(name, r), mesh))
  # Same arithmetic, the client sum split over devices: rtol 1e-5, atol 1e-6.
  chex.assert_trees_all_close(jax.device_get(state), jax.device_get(run(name)[-1]),
                              rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_all_padding_round_changes_nothing_but_the_round(name):
  alg = build(name)
  state = run(name)[1]
  empty = clients_for(name, 2)
  empty = empty._replace(weight=np.zeros_like(empty.weight), mask=np.zeros_like(empty.mask),
                         client_id=np.full_like(empty.client_id, -1))
  after, _ = jax.jit(alg.round)(state, empty)
  assert int(after.round) == int(state.round) + 1
  chex.assert_trees_all_equal(after._replace(round=state.round), state)


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_resume_is_exact(name, tmp_path):
  alg = build(name)
  state = run(name)[1]
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(state)
  restored = ckpt.restore(alg.init(bn_params(), jax.random.PRNGKey(1)))
  ckpt.close()
  assert type(restored) is type(state)
  chex.assert_trees_all_equal(restored, state)
  round_fn = jax.jit(alg.round)
  chex.assert_trees_all_equal(round_fn(restored, clients_for(name, 2)),
                              round_fn(state, clients_for(name, 2)))


@pytest.mark.parametrize("name", [n for n in NAMES if registry.get(n).federated])
def test_stacked_aggregation_equals_streamed(name):
  alg = build(name, aggregator=aggregators.stacked_mean(), chunk_size=2)
  round_fn = jax.jit(alg.round)
  state = alg.init(bn_params(), jax.random.PRNGKey(0))
  for r in range(ROUNDS):
    state, _ = round_fn(state, clients_for(name, r))
  # The same weighted mean, summed in another order: rtol 1e-5, atol 1e-6.
  chex.assert_trees_all_close(state, run(name)[-1], rtol=1e-5, atol=1e-6)


def test_registry_lookup_errors_list_the_names():
  with pytest.raises(ValueError, match="fedavg"):
    registry.get("fedavgg")
  with pytest.raises(ValueError, match="takes"):
    build_bad = functools.partial(registry.build, "fedprox", bn_loss, optax.sgd(LR),
                                  optax.sgd(1.0), plan=RoundPlan())
    build_bad(rho=0.1)
  with pytest.raises(ValueError, match="num_clients"):
    registry.build("scaffold", bn_loss, optax.sgd(LR), optax.sgd(1.0), client_lr=LR)


def test_restoring_another_algorithms_checkpoint_is_a_clear_error(tmp_path):
  ckpt = Checkpointer(str(tmp_path / "ckpt"))
  ckpt.save(run("fedavg")[0])
  with pytest.raises(errors.CheckpointMismatchError, match="new --workdir"):
    ckpt.restore(build("scaffold").init(bn_params(), jax.random.PRNGKey(0)))
  ckpt.close()


# Two in the fast subset (one stateless, one with lr in its client state); all in the full suite.
@pytest.mark.parametrize("name", [n if n in ("fedavg", "scaffold") else
                                  pytest.param(n, marks=pytest.mark.slow) for n in NAMES])
def test_client_lr_schedule_equals_that_rounds_learning_rate(name):
  """``RoundPlan.client_lr_scale`` = the algorithm rebuilt every round at lr * scale(round)
  (SCAFFOLD's option II control variates use the scaled lr too)."""
  factors = (0.25, 1.0, 0.5)
  schedule = lambda r: jnp.asarray(factors)[r]  # noqa: E731
  scheduled = jax.jit(build(name, client_lr_scale=schedule).round)
  state = ref = build(name).init(bn_params(), jax.random.PRNGKey(0))
  for r, f in enumerate(factors):
    state, _ = scheduled(state, clients_for(name, r))
    ref, _ = jax.jit(build(name, lr=LR * f).round)(ref, clients_for(name, r))
  chex.assert_trees_all_close(state, ref, rtol=1e-5, atol=1e-6)
  unscheduled = run(name)[len(factors) - 1]
  gaps = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                      state.params, unscheduled.params)
  assert max(jax.tree.leaves(gaps)) > 1e-4  # the schedule did change the training
