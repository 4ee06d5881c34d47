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
from tests import testing


def test_local_baseline_matches_reference_loop():
  alg = algorithms.local_baseline(testing.linear_loss, optax.sgd(testing.LR),
                                  plan=algorithms.RoundPlan(num_clients=testing.N))
  round_fn = jax.jit(alg.round)
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  models = {i: testing.to_numpy(testing.make_params()) for i in range(testing.N)}
  for r in range(testing.ROUNDS):
    clients = testing.sampled_clients(r)
    state, _ = round_fn(state, clients)
    trained, weights = [], []
    for row in range(testing.C):
      if clients.weight[row] == 0:  # padding client
        continue
      cid = int(clients.client_id[row])
      m = models[cid]
      for s in testing.real_steps(clients, row):
        grads, _ = testing.reference_grad(testing.linear_loss)(m, testing.step_batch(clients, row, s))
        m = jax.tree.map(lambda x, g: x - testing.LR * g, m, grads)
      models[cid] = m
      trained.append(m)
      weights.append(float(clients.weight[row]))
    # float32 reference vs the vmapped/scanned round: rtol 1e-5, atol 1e-6.
    chex.assert_trees_all_close(state.client_state.algorithm, testing.stack_rows(models),
                                rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.params, testing.weighted_average(trained, weights),
                                rtol=1e-5, atol=1e-6)
  # Site 0 was sampled only in round 0; its own model is what client_params returns.
  chex.assert_trees_all_close(alg.client_params(state, 0), models[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(models[0]["w"], testing.to_numpy(testing.make_params())["w"])
