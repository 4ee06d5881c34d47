"""Centralized training in the round API vs a plain Python SGD loop."""

import chex
import jax
import numpy as np
import optax

from fedjax_med import algorithms
from tests.testing import LR, S, linear_loss, make_clients, make_params


def test_centralized_matches_python_loop_with_persistent_momentum():
  beta = 0.9
  alg = algorithms.centralized(linear_loss, optax.sgd(LR, momentum=beta))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  p, v = make_params(), None
  for r in range(2):
    clients = make_clients(seed=r)
    state, metrics = round_fn(state, clients)
    for c in range(clients.weight.shape[0]):
      for s in range(S):
        batch = {"image": clients.image[c, s], "label": clients.label[c, s],
                 "mask": clients.mask[c, s] & (clients.weight[c] > 0)}
        if not batch["mask"].any():
          continue
        g, _ = jax.grad(linear_loss, has_aux=True)(p, batch, None)
        v = g if v is None else jax.tree.map(lambda m, x: beta * m + x, v, g)
        p = jax.tree.map(lambda x, m: x - LR * m, p, v)
    chex.assert_trees_all_close(state.params, p, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(metrics.client_steps, [3, 2, 3, 0])
