"""FedSAM / FedASAM vs a Python-loop reference.

Qu et al. (ICML 2022) / Caldarola et al. (ECCV 2022): each local step computes
``g = grad(w)``, the ascent ``e = rho g / ||g||`` (adaptive, Kwon et al. 2021:
``T = |w| + eta``, ``e = rho T^2 g / ||T g||``; norms global over the pytree),
then an SGD step at ``w`` with ``grad(w + e)``.
"""

import chex
import jax
import numpy as np
import optax
import pytest

from fedjax_med import algorithms
from tests import testing


def global_norm(tree):
  return np.sqrt(sum(np.sum(x * x) for x in jax.tree.leaves(tree)))


def sam_reference_round(server, clients, rho, adaptive, eta):
  grad = lambda w, batch: testing.reference_grad(testing.linear_loss)(w, batch)[0]  # noqa: E731
  models, weights = [], []
  for c in range(testing.C):
    if clients.weight[c] == 0:  # padding client
      continue
    w = server
    for s in testing.real_steps(clients, c):
      batch = testing.step_batch(clients, c, s)
      g = grad(w, batch)
      if adaptive:
        t = jax.tree.map(lambda x: np.abs(x) + eta, w)
        norm = global_norm(jax.tree.map(lambda ti, gi: ti * gi, t, g))
        e = jax.tree.map(lambda ti, gi, n=norm: rho * ti * ti * gi / n, t, g)
      else:
        norm = global_norm(g)
        e = jax.tree.map(lambda gi, n=norm: rho * gi / n, g)
      g_adv = grad(jax.tree.map(lambda x, ei: x + ei, w, e), batch)
      w = jax.tree.map(lambda x, gi: x - testing.LR * gi, w, g_adv)
    models.append(w)
    weights.append(float(clients.weight[c]))
  return testing.weighted_average(models, weights)  # server sgd(1.0) on the mean delta


@pytest.mark.parametrize("rho,adaptive,eta", [(0.05, False, 0.0), (0.5, True, 0.01)])
def test_fedsam_matches_reference_loop(rho, adaptive, eta):
  alg = algorithms.fedsam(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), rho=rho, adaptive=adaptive,
                          eta=eta)
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  ref = testing.to_numpy(testing.make_params())
  for r in range(testing.ROUNDS):
    clients = testing.sampled_clients(r)
    state, _ = round_fn(state, clients)
    ref = sam_reference_round(ref, clients, rho, adaptive, eta)
    # float32 reference vs the scanned/vmapped round: rtol 1e-5, atol 1e-6.
    chex.assert_trees_all_close(state.params, ref, rtol=1e-5, atol=1e-6)
  # The perturbation matters: with rho = 0 (plain FedAvg) the reference lands elsewhere.
  ref_avg = testing.to_numpy(testing.make_params())
  for r in range(testing.ROUNDS):
    ref_avg = sam_reference_round(ref_avg, testing.sampled_clients(r), 0.0, False, 0.0)
  assert float(global_norm(jax.tree.map(np.subtract, ref, ref_avg))) > 1e-3


def test_fedsam_with_rho_zero_is_fedavg():
  sam = algorithms.fedsam(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), rho=0.0)
  state = sam.init(testing.make_params(), jax.random.PRNGKey(0))
  for r in range(testing.ROUNDS):
    state, _ = jax.jit(sam.round)(state, testing.sampled_clients(r))
  # e = 0 * g / ||g|| = 0 exactly, so grad(w + e) = grad(w).
  chex.assert_trees_all_close(state.params, testing.fedavg_run()[-1].params, rtol=0, atol=0)
