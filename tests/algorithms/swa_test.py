"""Server SWA around FedAvg, and the cyclical server learning rate, against hand arithmetic."""

import chex
import jax
import numpy as np
import optax
import pytest

from fedjax_med import algorithms
from tests.testing import LR, ROUNDS, fedavg_run, linear_loss, make_params, sampled_clients


@pytest.mark.parametrize("start_round,period", [(2, 1), (1, 2)])
def test_swa_averages_the_server_models_of_the_chosen_rounds(start_round, period):
  inner = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  alg = algorithms.swa(inner, start_round=start_round, period=period)
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  plain = [s.params for s in fedavg_run()]  # plain FedAvg's server params after rounds 1, 2, 3
  averaged = []
  for r in range(1, ROUNDS + 1):
    state, _ = round_fn(state, sampled_clients(r - 1))
    # The wrapped algorithm trains on untouched (same ops in another jit: rtol 1e-6).
    chex.assert_trees_all_close(state.inner.params, plain[r - 1], rtol=1e-6, atol=1e-7)
    if r >= start_round and (r - start_round) % period == 0:
      averaged.append(plain[r - 1])
    # The SWA model: the mean of the averaged rounds' models, or the current model before any.
    expected = (jax.tree.map(lambda *ps: sum(ps) / len(ps), *averaged) if averaged
                else plain[r - 1])
    chex.assert_trees_all_close(state.params, expected, rtol=1e-5, atol=1e-6)
    assert int(state.swa_count) == len(averaged) and int(state.round) == r
  # (2, 1): rounds 2 and 3 averaged; (1, 2): rounds 1 and 3.
  assert len(averaged) == 2


def test_swa_rejects_a_nonpositive_period():
  inner = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  with pytest.raises(ValueError):
    algorithms.swa(inner, start_round=1, period=0)


def test_cyclical_lr_by_hand():
  sched = algorithms.cyclical_lr(1.0, 0.1, start_round=3, period=2)
  # count t produces round t + 1. Rounds 1-2 (< start_round): base 1.0. From round 3 on, cycles
  # of 2 rounds; pos = (round - 3) mod 2; pos 0 (the averaging rounds 3, 5, 7) uses min_lr 0.1,
  # pos 1 uses 1.0 + (0.1 - 1.0) * 1/2 = 0.55.
  expected = [1.0, 1.0, 0.1, 0.55, 0.1, 0.55, 0.1, 0.55]
  np.testing.assert_allclose([float(sched(t)) for t in range(8)], expected, rtol=1e-6)
  # It is an optax schedule: sgd(sched) at count 2 (round 3) steps by 0.1 * grad.
  tx = optax.sgd(sched)
  st = tx.init(np.zeros((), np.float32))
  for _ in range(2):
    _, st = tx.update(np.ones((), np.float32), st)
  upd, _ = tx.update(np.ones((), np.float32), st)
  np.testing.assert_allclose(upd, -0.1, rtol=1e-6)
