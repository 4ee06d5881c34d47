"""FedExP vs a Python-loop reference of Jhunjhunwala et al. (ICLR 2023), Algorithm 1.

Each real client i runs plain SGD from the server model w for its real steps and
reports delta_i = w - w_i. With p_i = weight_i / sum_j weight_j (padding clients
have weight 0 and drop out):
  mean = sum_i p_i delta_i
  eta_g = max(1, sum_i p_i ||delta_i||^2 / (2 (||mean||^2 + eps)))
  w <- w - eta_g * mean
"""

import chex
import jax
import numpy as np
import optax

from fedjax_med import algorithms
from tests import testing

EPS = 1e-3


def reference_round(w, clients, eps):
  """One FedExP round, client by client and step by step in float32 numpy."""
  deltas, weights = [], []
  for c in range(testing.C):
    if clients.weight[c] == 0:  # padding client
      continue
    y = w
    for s in testing.real_steps(clients, c):
      grads, _ = testing.reference_grad(testing.linear_loss)(y, testing.step_batch(clients, c, s))
      y = jax.tree.map(lambda x, g: x - testing.LR * g, y, grads)
    deltas.append(jax.tree.map(np.subtract, w, y))
    weights.append(float(clients.weight[c]))
  p = np.asarray(weights) / sum(weights)
  mean = jax.tree.map(lambda *ds: sum(pi * d for pi, d in zip(p, ds, strict=True)), *deltas)
  sq = lambda t: sum(float(np.sum(np.square(x))) for x in jax.tree.leaves(t))  # noqa: E731
  eta = max(1.0, sum(pi * sq(d) for pi, d in zip(p, deltas, strict=True)) / (2 * (sq(mean) + eps)))
  return jax.tree.map(lambda x, m: x - eta * m, w, mean), eta


def test_fedexp_matches_reference_loop():
  alg = algorithms.fedexp(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), eps=EPS)
  round_fn = jax.jit(alg.round)
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  w, etas = testing.to_numpy(testing.make_params()), []
  for r in range(testing.ROUNDS):
    state, _ = round_fn(state, testing.sampled_clients(r))
    w, eta = reference_round(w, testing.sampled_clients(r), EPS)
    etas.append(eta)
    # float32 reference vs the vmapped/scanned round: rtol 1e-5, atol 1e-6.
    chex.assert_trees_all_close(state.params, w, rtol=1e-5, atol=1e-6)
  assert max(etas) > 1.0  # the extrapolation is exercised, not only eta = 1


def test_fedexp_with_a_huge_eps_is_fedavg():
  # eps -> infinity makes eta_g = 1: plain FedAvg (server sgd(1.0)).
  alg = algorithms.fedexp(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), eps=1e12)
  round_fn = jax.jit(alg.round)
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  for r in range(testing.ROUNDS):
    state, _ = round_fn(state, testing.sampled_clients(r))
  chex.assert_trees_all_close(state.params, testing.fedavg_run()[-1].params, rtol=1e-6, atol=1e-7)
