"""FedDyn: federated learning with dynamic regularization.

Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021,
Algorithm 1. Client i minimises
``L_i(w) - <g_i, w> + alpha/2 ||w - w_server||^2`` (S optimizer steps), then
updates its state ``g_i <- g_i - alpha (w_i - w_server)``. The server keeps
``h <- h - alpha/N sum_{i in S} (w_i - w_server)`` and sets
``w <- mean_i w_i - h / alpha``, i.e. applies ``server_optimizer`` (sgd(1.0)
reproduces the paper) to the pseudo-gradient ``mean_delta + h / alpha``.
The mean over clients is weighted by ``ClientBatch.weight`` (the paper's
uniform mean when the weights are equal).
"""

from __future__ import annotations

import jax
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local


def feddyn(
  loss_fn: types.LossFn,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation,
  *,
  alpha: float,
  plan: base.RoundPlan,
) -> types.FederatedAlgorithm:
  """Builds FedDyn with regularization ``alpha`` over ``plan.num_clients`` clients.

  ``state.server`` is ``h``; ``state.client_state.algorithm`` the ``g_i``.
  ``optax.sgd(1.0)`` as ``server_optimizer`` reproduces the paper.
  """
  base.check_plan(plan, "feddyn", stateful=True)
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  num_clients = plan.num_clients

  def client_fn(state, data, g_i, key):
    w_server = state.params

    def grad_fn(p, batch, rng):
      out, g = value_and_grad(p, batch, rng)
      return out, jax.tree.map(
        lambda gg, gi, pp, ws: gg - gi + alpha * (pp - ws), g, g_i, p, w_server
      )

    res = local.local_train(
      None, client_optimizer, w_server, data, key, unroll=plan.unroll, grad_fn=grad_fn,
      lr_scale=base.lr_scale(plan, state.round),
    )
    new_g_i = jax.tree.map(lambda gi, w, ws: gi - alpha * (w - ws), g_i, res.params, w_server)
    return res, new_g_i

  def server_fn(state, agg: base.Aggregate):
    # g_i_new - g_i_old = -alpha (w_i - w_server), so the paper's
    # h <- h - alpha/N sum_i (w_i - w_server) is h + (1/N) sum_i (g_i_new - g_i_old).
    h = jax.tree.map(lambda hh, ch: hh + ch / num_clients, state.server, agg.row_change_sum)
    return jax.tree.map(lambda d, hh: d + hh / alpha, agg.pseudo_grad, h), h

  round_fn = base.federated_round(client_fn, server_optimizer, plan, server_fn)
  return types.FederatedAlgorithm(base.zeros_init(server_optimizer, plan), round_fn)
