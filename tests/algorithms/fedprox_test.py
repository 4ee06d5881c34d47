"""FedProx vs a Python-loop reference of Li et al. (MLSys 2020).

Client i runs plain SGD on ``f_i(w) + mu/2 ||w - w_t||^2`` from the server model
``w_t``; the server (sgd(1.0)) moves to the weighted mean of the client models.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms
from fedjax_med.algorithms.fedprox import proximal_loss
from tests import testing

MU = 0.5


def prox_reference_round(loss_fn, server, clients, mu):
  """One FedProx round: per client, per real step, explicit grad and SGD."""
  models, weights = [], []
  for c in range(testing.C):
    if clients.weight[c] == 0:  # padding client
      continue
    w = server
    for s in testing.real_steps(clients, c):
      grads, aux = testing.reference_grad(loss_fn)(w, testing.step_batch(clients, c, s))
      # d/dw mu/2 ||w - w_t||^2 = mu (w - w_t), on the trainable "params" collection only.
      if "params" in w:
        prox = jax.tree.map(lambda x, a: mu * (x - a), w["params"], server["params"])
        grads = {**grads, "params": jax.tree.map(np.add, grads["params"], prox)}
      else:
        grads = jax.tree.map(lambda g, x, a: g + mu * (x - a), grads, w, server)
      w = jax.tree.map(lambda x, g: x - testing.LR * g, w, grads)
      w = {**w, **aux.get("variables", {})}
    models.append(w)
    weights.append(float(clients.weight[c]))
  return testing.weighted_average(models, weights)


@pytest.mark.parametrize("with_stats", [False, True])
def test_fedprox_matches_reference_loop(with_stats):
  loss_fn = testing.stats_loss if with_stats else testing.linear_loss
  alg = algorithms.fedprox(loss_fn, optax.sgd(testing.LR), optax.sgd(1.0), mu=MU)
  state = alg.init(testing.make_params(with_stats), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  ref = testing.to_numpy(testing.make_params(with_stats))
  for r in range(testing.ROUNDS):
    clients = testing.sampled_clients(r)
    state, metrics = round_fn(state, clients)
    ref = prox_reference_round(loss_fn, ref, clients, MU)
    # float32 reference vs the scanned/vmapped round: rtol 1e-5, atol 1e-6.
    chex.assert_trees_all_close(state.params, ref, rtol=1e-5, atol=1e-6)
  assert int(state.round) == testing.ROUNDS
  np.testing.assert_array_equal(metrics.client_steps, [3, 2, 3, 0])


def test_fedprox_with_mu_zero_is_fedavg():
  prox = algorithms.fedprox(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), mu=0.0)
  state = prox.init(testing.make_params(), jax.random.PRNGKey(0))
  for r in range(testing.ROUNDS):
    state, _ = jax.jit(prox.round)(state, testing.sampled_clients(r))
  # The term adds 0 * ||.||^2 to the loss and exactly 0 to every gradient.
  chex.assert_trees_all_close(state.params, testing.fedavg_run()[-1].params, rtol=0, atol=0)


def test_proximal_term_only_pulls_the_params_collection():
  params = testing.make_params(with_stats=True)
  anchor = jax.tree.map(lambda x: x + 1.0, params)
  loss = lambda p, batch, rng: (jnp.sum(p["params"]["w"]) + jnp.sum(p["stats"]["mean"]), {})  # noqa: E731
  grads = jax.grad(lambda p: proximal_loss(loss, anchor, MU)(p, None, None)[0])(params)
  # params: d sum(w) = 1 (w), 0 (b); plus mu (p - anchor) = -mu. stats: d sum(mean) = 1, no prox.
  chex.assert_trees_all_close(grads["params"]["w"], np.full_like(params["params"]["w"], 1.0 - MU))
  chex.assert_trees_all_close(grads["params"]["b"], np.full_like(params["params"]["b"], -MU))
  chex.assert_trees_all_close(grads["stats"]["mean"], np.ones_like(params["stats"]["mean"]))
  # A plain params tree (no "params" key): every leaf is pulled.
  flat = jax.grad(lambda p: proximal_loss(
      lambda q, b, k: (0.0, {}), anchor["params"], MU)(p, None, None)[0])(params["params"])
  chex.assert_trees_all_close(flat, jax.tree.map(lambda x: jnp.full_like(x, -MU), flat))
