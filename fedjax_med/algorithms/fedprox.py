"""FedProx: FedAvg with a proximal term on each client.

Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020.
Each client minimises ``f_i(w) + mu/2 ||w - w_server||^2``; mu = 0 is FedAvg.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local


def proximal_loss(loss_fn: types.LossFn, anchor: types.Params, mu: float) -> types.LossFn:
  """``loss_fn`` plus ``mu/2 ||params - anchor||^2`` over the trainable ``params``."""

  def prox_loss(params, batch, rng):
    loss, aux = loss_fn(params, batch, rng)
    trainable = lambda t: t["params"] if isinstance(t, dict) and "params" in t else t  # noqa: E731
    sq = sum(
        jnp.sum(jnp.square(p - a))
        for p, a in zip(jax.tree.leaves(trainable(params)), jax.tree.leaves(trainable(anchor)),
                        strict=True)
    )
    return loss + 0.5 * mu * sq, aux

  return prox_loss


def fedprox(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    mu: float,
    plan: base.RoundPlan = base.RoundPlan(),
) -> types.FederatedAlgorithm:
  """Builds FedProx with proximal strength ``mu`` (other arguments as ``fedavg``).

  Only the trainable ``"params"`` collection is pulled towards the server
  model (for a flax variables dict); the reported loss includes the term.
  """

  def client_fn(state, data, key):
    loss = proximal_loss(loss_fn, state.params, mu)  # DP-SGD clips each example's loss + term
    return local.local_train(loss, client_optimizer, state.params, data, key,
                             **base.train_options(plan, loss, state))

  return base.stateless(client_fn, server_optimizer, plan, "fedprox")
