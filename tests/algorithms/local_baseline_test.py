"""The local-only baseline vs a Python loop: every sampled site trains its own model alone.

Site i keeps model m_i (all start from the initial model). When sampled with real
data it runs plain SGD for its real steps from m_i; unsampled sites keep theirs.
state.params is the weighted mean of the models trained this round.
"""

import chex
import jax
import numpy as np
import optax

from fedjax_med import algorithms
from tests.testing import (
  LR,
  ROUNDS,
  C,
  N,
  linear_loss,
  make_params,
  real_steps,
  reference_grad,
  sampled_clients,
  stack_rows,
  step_batch,
  to_numpy,
  weighted_average,
)


def test_local_baseline_matches_reference_loop():
  alg = algorithms.local_baseline(linear_loss, optax.sgd(LR),
                                  plan=algorithms.RoundPlan(num_clients=N))
  round_fn = jax.jit(alg.round)
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  models = {i: to_numpy(make_params()) for i in range(N)}
  for r in range(ROUNDS):
    clients = sampled_clients(r)
    state, _ = round_fn(state, clients)
    trained, weights = [], []
    for row in range(C):
      if clients.weight[row] == 0:  # padding client
        continue
      cid = int(clients.client_id[row])
      m = models[cid]
      for s in real_steps(clients, row):
        grads, _ = reference_grad(linear_loss)(m, step_batch(clients, row, s))
        m = jax.tree.map(lambda x, g: x - LR * g, m, grads)
      models[cid] = m
      trained.append(m)
      weights.append(float(clients.weight[row]))
    # float32 reference vs the vmapped/scanned round: rtol 1e-5, atol 1e-6.
    chex.assert_trees_all_close(state.client_state.algorithm, stack_rows(models),
                                rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.params, weighted_average(trained, weights),
                                rtol=1e-5, atol=1e-6)
  # Site 0 was sampled only in round 0; its own model is what client_params returns.
  chex.assert_trees_all_close(alg.client_params(state, 0), models[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(models[0]["w"], to_numpy(make_params())["w"])
