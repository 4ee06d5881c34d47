"""FedRep: personal heads trained first, then the shared representation.

Collins et al., "Exploiting Shared Representations for Personalized Federated
Learning", ICML 2021. A client starts from the server's body with its own head
(``personal`` layers, by default the classifier head). Of its S local steps,
the first ``round(head_fraction * S)`` train only the head (body frozen), the
rest train only the body (head frozen, at its new value); the client keeps its
head and uploads its delta. The paper runs 10 head epochs for 1 body epoch
(``head_fraction`` ~ 0.9); the default 0.5 gives the body half of the budget.
Frozen means frozen: the optimizer's updates of those leaves are set to zero
(``optax.masked``) and, after the phase, the leaves (BatchNorm statistics
included) are put back. The server averages every leaf as FedAvg (its head is
the clients' average, the global model's head); ``client_params(state, c)`` is
client ``c``'s own model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local, personal


def frozen(optimizer: optax.GradientTransformation, mask) -> optax.GradientTransformation:
  """``optimizer`` whose updates are zero where ``mask`` (a pytree of bools) is True."""
  return optax.chain(optimizer, optax.masked(optax.set_to_zero(), mask))


def _restore(params, start, keep_mask):
  """``params`` with the leaves where ``keep_mask`` is True put back to ``start``'s."""
  return jax.tree.map(lambda k, p, s: s if k else p, keep_mask, params, start)


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
    body = jax.tree.map(lambda h: not h, head)
    num_steps = data["mask"].shape[0]
    h = min(num_steps, max(0, int(round(head_fraction * num_steps))))  # static
    options = {"unroll": plan.unroll, "lr_scale": base.lr_scale(plan, state.round)}
    head_key, body_key = jax.random.split(key)
    params, losses, steps = start, [], jnp.zeros((), jnp.int32)
    # the head phase (body frozen), then the body phase (head frozen)
    for (lo, hi), phase_key, fixed in (((0, h), head_key, body),
                                       ((h, num_steps), body_key, head)):
      if hi == lo:
        continue
      before = params
      res = local.local_train(loss_fn, frozen(client_optimizer, fixed), params,
                              jax.tree.map(lambda x, lo=lo, hi=hi: x[lo:hi], data), phase_key,
                              **options)
      params = _restore(res.params, before, fixed)
      losses.append(res.loss)
      steps = steps + res.steps
    res = local.LocalResult(params, jnp.concatenate(losses), steps)
    return res, personal.local_leaves(params, is_local)

  round_fn = base.federated_round(client_fn, server_optimizer, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, personal.client_params_fn(is_local))
