"""APFL: adaptive personalized federated learning (a learned mix of a local and the global model).

Deng, Kamani and Mahdavi, "Adaptive Personalized Federated Learning", 2020
(Algorithm 1). Client ``c`` keeps a local model ``v_c`` and a mixing weight
``alpha_c`` (a row of the per-client store). At every local step, with ``w``
the client's copy of the global model and ``m = alpha v + (1 - alpha) w``:

- ``w <- w - lr grad f(w)``                          (FedAvg's local step; uploaded)
- ``v <- v - lr grad_v f(m) = v - lr alpha grad f(m)``
- ``alpha <- clip(alpha - alpha_lr <v - w, grad f(m)>, 0, 1)``  (``alpha_lr = 0``: fixed)

all three from the values before the step. The client's personalized model is
``alpha_c v_c + (1 - alpha_c) w`` with ``w`` the current server model:
``client_params(state, c)``. The global model is FedAvg's (a client whose
personal update fails is dropped whole, its global delta too). Of a flax
variables dict only the ``params`` are mixed: the mixed model runs with ``v``'s
BatchNorm statistics, and the statistics its forward pass updates become
``v``'s. ``v`` and ``w`` each get their own fresh ``client_optimizer`` state
every round.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local

# fold_in stream of a step key for the mixed model's forward pass (dropout, augmentation).
MIX_STREAM = 0xA9F1


def mix(alpha: types.Array, v: types.Params, w: types.Params) -> types.Params:
  """``alpha v + (1 - alpha) w`` leaf by leaf; of a flax variables dict only the ``params``
  collection is mixed, the others (BatchNorm statistics) are ``v``'s."""
  def lerp(x, y):
    return jax.tree.map(lambda a, b: alpha.astype(a.dtype) * a + (1 - alpha.astype(a.dtype)) * b,
                        x, y)

  if isinstance(v, dict) and "params" in v:
    return {**v, "params": lerp(v["params"], w["params"])}
  return lerp(v, w)


def apfl(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    alpha: float,
    alpha_lr: float,
    plan: base.RoundPlan,
) -> types.FederatedAlgorithm:
  """Builds APFL: ``alpha`` the initial mixing weight of the local model, ``alpha_lr`` its
  learning rate (0 = fixed).

  ``state.client_state.algorithm`` is ``{"model": v [N, ...], "alpha": [N]}``.

  Raises:
    ValueError: ``alpha`` outside [0, 1] or ``alpha_lr`` < 0.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"apfl: alpha={alpha} must be in [0, 1]")
  if alpha_lr < 0:
    raise ValueError(f"apfl: alpha_lr={alpha_lr} must be >= 0")
  base.check_plan(plan, "apfl", stateful=True)
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def init_fn(params, rng) -> types.ServerState:
    row = lambda p: {"model": p, "alpha": jnp.asarray(alpha, jnp.float32)}  # noqa: E731
    return base.init_state(params, server_optimizer, rng, plan, client_row=row)

  def client_fn(state, data, own, key):
    scale = base.lr_scale(plan, state.round)
    num_steps = data["mask"].shape[0]
    keys = jax.random.split(key, num_steps)
    active = jnp.any(data["mask"].reshape(num_steps, -1), axis=1)

    def scaled(updates):
      if scale is None:
        return updates
      return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)

    def step(carry, xs):
      w, w_opt, v, v_opt, a = carry
      batch, step_key, has_data = xs
      (loss, aux_w), g_w = grad_fn(w, batch, step_key)

      def mixed_loss(v, a):
        return loss_fn(mix(a, v, w), batch, jax.random.fold_in(step_key, MIX_STREAM))

      (_, aux_m), (g_v, g_a) = jax.value_and_grad(mixed_loss, argnums=(0, 1), has_aux=True)(v, a)
      upd, new_w_opt = client_optimizer.update(g_w, w_opt, w)
      new_w = local.apply_variable_updates(optax.apply_updates(w, scaled(upd)), aux_w)
      upd, new_v_opt = client_optimizer.update(g_v, v_opt, v)
      new_v = local.apply_variable_updates(optax.apply_updates(v, scaled(upd)), aux_m)
      new_a = jnp.clip(a - alpha_lr * g_a, 0.0, 1.0)
      new = (new_w, new_w_opt, new_v, new_v_opt, new_a)
      carry = jax.tree.map(lambda n, o: jnp.where(has_data, n, o), new, carry)
      return carry, jnp.where(has_data, loss, 0.0)

    start = (state.params, client_optimizer.init(state.params), own["model"],
             client_optimizer.init(own["model"]), own["alpha"])
    (w, _, v, _, a), losses = jax.lax.scan(step, start, (data, keys, active), unroll=plan.unroll)
    res = local.LocalResult(w, losses, jnp.sum(active.astype(jnp.int32)))
    return res, {"model": v, "alpha": a}

  def client_params(state: types.ServerState, client: int) -> types.Params:
    own = jax.tree.map(lambda x: x[client], state.client_state.algorithm)
    return mix(own["alpha"], own["model"], state.params)

  def diagnostics(state: types.ServerState) -> dict:
    a = state.client_state.algorithm["alpha"]
    return {"apfl_alpha_mean": jnp.mean(a), "apfl_alpha_min": jnp.min(a),
            "apfl_alpha_max": jnp.max(a)}

  round_fn = base.federated_round(client_fn, server_optimizer, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, client_params, diagnostics)
