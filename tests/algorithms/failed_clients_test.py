"""Failed clients are dropped inside the jitted round, never averaged (issue 16, part 1).

A client whose loss or update is non-finite (here: NaN images, so its loss and every
gradient are NaN) must count as if it had not taken part: the round equals the round in
which that client's slot is empty (weight 0, no data, same id), state rows included, and
``RoundMetrics.dropped`` marks it. Weight 0 alone would not do: ``0 * nan = nan``.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms, compression
from fedjax_med.algorithms import aggregators
from fedjax_med.privacy import dp_fedavg
from tests.testing import (
  LR,
  N,
  bn_loss,
  bn_params,
  linear_loss,
  make_clients,
  make_params,
  sampled_clients,
)

BAD = 1  # the failing row (a real client with weight > 0 and data)


def poisoned(clients, rows=(BAD,)):
  """``clients`` with NaN images in ``rows``: their loss and update are NaN."""
  image = np.array(clients.image, np.float32)
  image[list(rows)] = np.nan
  return clients._replace(image=image)


def without(clients, rows=(BAD,)):
  """``clients`` with ``rows`` emptied: weight 0, no data, same ids (a dropped-out client)."""
  mask, weight = np.array(clients.mask), np.array(clients.weight)
  mask[list(rows)] = False
  weight[list(rows)] = 0.0
  return clients._replace(mask=mask, weight=weight)


def run(alg, batches, params=None):
  round_fn = jax.jit(alg.round)
  state = alg.init(make_params() if params is None else params, jax.random.PRNGKey(0))
  metrics = []
  for batch in batches:
    state, m = round_fn(state, batch)
    metrics.append(m)
  return jax.device_get(state), jax.device_get(metrics)


def assert_finite(tree):
  for leaf in jax.tree.leaves(tree):
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
      assert np.all(np.isfinite(leaf))


def fedavg(plan=algorithms.RoundPlan(), momentum=None):
  return algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0, momentum=momentum),
                           plan=plan)


def scaffold(plan=None):
  return algorithms.scaffold(linear_loss, optax.sgd(LR), optax.sgd(1.0), client_lr=LR,
                             plan=plan or algorithms.RoundPlan(num_clients=N))


PLANS = {
    "plain": algorithms.RoundPlan(),
    "chunked": algorithms.RoundPlan(chunk_size=2),
    "stacked": algorithms.RoundPlan(aggregator=aggregators.stacked_mean()),
    "error_feedback": algorithms.RoundPlan(
        num_clients=4, compressor=compression.make("topk", fraction=0.5, error_feedback=True),
        error_feedback=True),
    "client_dp": algorithms.RoundPlan(  # adaptive clipping and noise: both runs draw the same
        client_dp=dp_fedavg.ClientDP(1.0, 3.0, 0.5, 0.5, 0.2, 1.0)),
}


@pytest.mark.parametrize("plan", list(PLANS))
def test_fedavg_round_with_a_nan_client_equals_the_round_without_it(plan):
  alg = fedavg(PLANS[plan], momentum=0.9)
  clients = make_clients()
  got, got_m = run(alg, [poisoned(clients), clients])
  want, want_m = run(alg, [without(clients), clients])
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
  assert_finite(got)
  np.testing.assert_array_equal(got_m[0].dropped, [False, True, False, False])
  np.testing.assert_array_equal(want_m[0].dropped, [False] * 4)
  assert not got_m[1].dropped.any()
  assert got_m[0].update_norm[BAD] == 0  # a failed client reports no update


def test_scaffold_nan_client_keeps_its_control_variate_and_equals_the_round_without_it():
  alg = scaffold()
  batches = [sampled_clients(r) for r in range(3)]
  # round 0: row 1 is client 4; round 1: row 0 is client 4 again (its row is read back)
  assert batches[0].client_id[BAD] == 4 and batches[1].client_id[0] == 4
  got, got_m = run(alg, [poisoned(batches[0])] + batches[1:])
  want, _ = run(alg, [without(batches[0])] + batches[1:])
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
  assert_finite(got)
  assert bool(got_m[0].dropped[BAD]) and not got_m[1].dropped.any()
  # after round 0 alone, client 4's control variate is still its initial (zero) row
  after0, _ = run(alg, [poisoned(batches[0])])
  for leaf in jax.tree.leaves(after0.client_state.algorithm):
    np.testing.assert_array_equal(leaf[4], 0.0)
    assert np.any(leaf[0] != 0.0)  # client 0 (row 0) did write its row


@pytest.mark.parametrize("name", ["feddyn", "fedbn", "local", "fedper", "fedrep", "ditto",
                                  "apfl"])
def test_other_stateful_algorithms_keep_the_failed_row(name):
  plan, params = algorithms.RoundPlan(num_clients=N), None
  dense = algorithms.personal.matcher("^params/Dense_0/")
  if name == "feddyn":
    alg = algorithms.feddyn(linear_loss, optax.sgd(LR), optax.sgd(1.0), alpha=0.1, plan=plan)
  elif name == "fedbn":
    alg, params = algorithms.fedbn(bn_loss, optax.sgd(LR), optax.sgd(1.0), plan=plan), bn_params()
  elif name == "fedper":
    alg, params = algorithms.fedper(bn_loss, optax.sgd(LR), optax.sgd(1.0), plan=plan,
                                    is_local=dense), bn_params()
  elif name == "fedrep":
    alg, params = algorithms.fedrep(bn_loss, optax.sgd(LR), optax.sgd(1.0), plan=plan,
                                    is_local=dense, head_fraction=0.5), bn_params()
  elif name == "ditto":
    alg = algorithms.ditto(linear_loss, optax.sgd(LR), optax.sgd(1.0), lam=0.1, plan=plan)
  elif name == "apfl":
    alg = algorithms.apfl(linear_loss, optax.sgd(LR), optax.sgd(1.0), alpha=0.3, alpha_lr=0.1,
                          plan=plan)
  else:
    alg = algorithms.local_baseline(linear_loss, optax.sgd(LR), plan=plan)
  batch = sampled_clients(0)
  got, got_m = run(alg, [poisoned(batch)], params)
  want, _ = run(alg, [without(batch)], params)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
  assert_finite(got)
  assert bool(got_m[0].dropped[BAD])


@pytest.mark.parametrize("name", ["fedavg", "scaffold"])
def test_all_clients_failing_changes_nothing_but_the_round(name):
  alg = fedavg(momentum=0.9) if name == "fedavg" else scaffold()
  first = sampled_clients(0)
  before, _ = run(alg, [first])  # momentum / control variates are non-zero now
  real = np.flatnonzero(first.weight > 0)
  after, m = run(alg, [first, poisoned(sampled_clients(1), rows=real)])
  assert int(after.round) == int(before.round) + 1
  chex.assert_trees_all_equal(after._replace(round=before.round), before)
  np.testing.assert_array_equal(m[1].dropped, first.weight > 0)


def test_centralized_drops_a_non_finite_round_as_a_whole():
  alg = algorithms.centralized(linear_loss, optax.sgd(LR, momentum=0.9))
  clients = jax.tree.map(lambda x: x[:1], make_clients())  # one pooled "client"
  before, _ = run(alg, [clients])
  after, m = run(alg, [clients, poisoned(clients, rows=(0,))])
  chex.assert_trees_all_equal(after._replace(round=before.round), before)
  assert int(after.round) == 2
  np.testing.assert_array_equal(m[1].dropped, [True])
  assert not m[0].dropped.any()


def test_swa_with_a_nan_client_equals_swa_without_it():
  alg = algorithms.swa(fedavg(), start_round=1)
  clients = make_clients()
  got, m = run(alg, [poisoned(clients), clients])
  want, _ = run(alg, [without(clients), clients])
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
  assert bool(m[0].dropped[BAD])


def test_compiles_once_with_and_without_failed_clients():
  alg = scaffold()
  traced = chex.assert_max_traces(n=1)(alg.round)
  round_fn = jax.jit(traced)
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  for batch in (poisoned(sampled_clients(0)), sampled_clients(1),
                poisoned(sampled_clients(2), rows=(0, 1, 2))):
    state, _ = round_fn(state, batch)
  assert_finite(jax.device_get(state))
  chex.clear_trace_counter()

