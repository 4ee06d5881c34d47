"""FedRep: personal heads trained first, then the shared representation.

Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML 2021. A client starts from the server's body with its own head
(``personal`` layers, by default the classifier head). Of its ``n`` real local
steps (steps with data: padding steps under ``fl.local_epochs`` or straggling
do not count), the first ``h = floor(head_fraction * n + 1/2)`` train only the
head (body frozen), the rest train only the body (head frozen, at its new
value); the client keeps its head and uploads its delta. The paper runs 10 head
epochs for 1 body epoch (``head_fraction`` ~ 0.9); the default 0.5 gives the
body half of the budget (S=5: 3 head steps, 2 body steps). Frozen means frozen:
the frozen leaves (BatchNorm statistics included) keep their values through the
phase, and the optimizer state starts fresh with the body phase, as two
separate local trainings would. The server averages every leaf as FedAvg (its
head is the clients' average, the global model's head); ``client_params(state,
c)`` is client ``c``'s own model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local, personal


def fedrep(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    head_fraction: float,
    plan: base.RoundPlan,
    is_local: personal.IsLocal,
) -> types.FederatedAlgorithm:
  """Builds FedRep: ``head_fraction`` of each round's local steps train the personal layers.

  Raises:
    ValueError: ``head_fraction`` outside [0, 1]; (at ``init``) ``is_local``
      selects no leaf, or every leaf.
  """
  if not 0.0 <= head_fraction <= 1.0:
    raise ValueError(f"fedrep: head_fraction={head_fraction} must be in [0, 1]")
  base.check_plan(plan, "fedrep", stateful=True)

  def row(params) -> tuple:
    personal.check_layers(params, is_local, "fedrep", "personal layers")
    return personal.local_leaves(params, is_local)

  def init_fn(params, rng) -> types.ServerState:
    return base.init_state(params, server_optimizer, rng, plan, client_row=row)

  def client_fn(state, data, own, key):
    start = personal.with_local_leaves(state.params, own, is_local)
    head = personal.leaf_mask(start, is_local)
    num_steps = data["mask"].shape[0]
    keys = jax.random.split(key, num_steps)
    active = jnp.any(data["mask"].reshape(num_steps, -1), axis=1)
    real = jnp.sum(active.astype(jnp.int32))
    head_steps = jnp.floor(head_fraction * real + 0.5).astype(jnp.int32)
    done_before = jnp.cumsum(active.astype(jnp.int32)) - active.astype(jnp.int32)
    in_head = done_before < head_steps  # [S]: the phase of each step (by real steps done)
    first_body = active & (done_before == head_steps)  # the body phase's first real step
    scale = base.lr_scale(plan, state.round)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    fresh = client_optimizer.init(start)

    def step(carry, xs):
      p, o = carry
      batch, step_key, has_data, head_phase, restart = xs
      o = jax.tree.map(lambda f, x: jnp.where(restart, f, x), fresh, o)
      (loss, aux), grads = grad_fn(p, batch, step_key)
      updates, new_o = client_optimizer.update(grads, o, p)
      if scale is not None:
        updates = jax.tree.map(lambda u: u * scale.astype(u.dtype), updates)
      new_p = local.apply_variable_updates(optax.apply_updates(p, updates), aux)
      # the trained group moves; the frozen one (params and statistics) keeps its values
      new_p = jax.tree.map(lambda is_head, n, old: jnp.where(head_phase == is_head, n, old),
                           head, new_p, p)
      carry = jax.tree.map(lambda n, old: jnp.where(has_data, n, old), (new_p, new_o), (p, o))
      return carry, jnp.where(has_data, loss, 0.0)

    (params, _), losses = jax.lax.scan(step, (start, fresh),
                                       (data, keys, active, in_head, first_body),
                                       unroll=plan.unroll)
    res = local.LocalResult(params, losses, real)
    return res, personal.local_leaves(params, is_local)

  round_fn = base.federated_round(client_fn, server_optimizer, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, personal.client_params_fn(is_local))
