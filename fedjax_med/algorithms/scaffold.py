"""SCAFFOLD: stochastic controlled averaging (option II control variates).

Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020, Algorithm 1. Client i corrects each local SGD gradient by
``c - c_i``; after K real steps with learning rate ``lr`` its control variate
becomes ``c_i+ = c_i - c + (x - y_i) / (K lr)`` (option II). The server moves
``x`` with its optimizer on the weighted mean of ``x - y_i`` and sets
``c <- c + (1/N) sum_{i in S} (c_i+ - c_i)`` over the N clients. Both means are
uniform over the real sampled clients, as in the paper (with size-weighted model
deltas and uniform control variates the corrections no longer cancel when
client sizes differ).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import aggregate, base, local


def scaffold(
  loss_fn: types.LossFn,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation,
  *,
  client_lr: float,
  plan: base.RoundPlan,
) -> types.FederatedAlgorithm:
  """Builds SCAFFOLD. ``state.server`` is ``c``; ``state.client_state.algorithm`` the ``c_i``.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``.
    client_optimizer: the local optimizer; option II assumes plain SGD with
      learning rate ``client_lr`` (``optax.sgd(client_lr)``).
    server_optimizer: applied to the weighted mean delta (``sgd(1.0)`` = paper with eta_g = 1).
    client_lr: the local learning rate used in the option II update.
    plan: ``plan.num_clients`` = N, the size of the control-variate store.
  """
  base.check_plan(plan, "scaffold", stateful=True)
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  num_clients = plan.num_clients

  def client_fn(state, data, c_i, key):
    x, c = state.params, state.server
    correction = jax.tree.map(jnp.subtract, c, c_i)

    def grad_fn(p, batch, rng):
      out, g = value_and_grad(p, batch, rng)
      return out, jax.tree.map(jnp.add, g, correction)

    scale = base.lr_scale(plan, state.round)
    res = local.local_train(None, client_optimizer, x, data, key, unroll=plan.unroll,
                            grad_fn=grad_fn, lr_scale=scale)
    lr = client_lr if scale is None else client_lr * scale  # this round's local lr
    k_lr = jnp.maximum(res.steps, 1).astype(jnp.float32) * lr
    new_c_i = jax.tree.map(lambda ci, cc, xx, y: ci - cc + (xx - y) / k_lr, c_i, c, x, res.params)
    new_c_i = jax.tree.map(lambda n, o: jnp.where(res.steps > 0, n, o), new_c_i, c_i)
    return res, new_c_i

  def server_fn(state, agg: base.Aggregate):
    control = jax.tree.map(lambda cc, d: cc + d / num_clients, state.server, agg.row_change_sum)
    return agg.pseudo_grad, control

  def diagnostics(state):
    """``control_norm`` = ||c||; ``client_control_drift_max`` = max_i ||c_i - c|| over all N
    clients (a client's control variate running away shows here first)."""
    c, rows = state.server, state.client_state.algorithm
    drift = aggregate.stacked_norm(jax.tree.map(lambda r, cc: r - cc[None], rows, c))
    return {"control_norm": aggregate.tree_norm(c), "client_control_drift_max": jnp.max(drift)}

  round_fn = base.federated_round(client_fn, server_optimizer, plan, server_fn, uniform=True)
  return types.FederatedAlgorithm(base.zeros_init(server_optimizer, plan), round_fn,
                                  diagnostics=diagnostics)
