"""FedExP: server step sizes extrapolated from how much the client updates disagree.

Jhunjhunwala, Wang and Joshi, "FedExP: Speeding Up Federated Averaging via
Extrapolation", ICLR 2023, Algorithm 1. Clients train as in FedAvg; the
server steps ``w <- w - eta_g * mean_delta`` with

    eta_g = max(1, sum_i p_i ||delta_i||^2 / (2 (||mean_delta||^2 + eps)))

(``p_i`` the normalized client weights; the paper's uniform ``1/M`` when the
weights are equal), a POCS-style extrapolation that grows when the client
updates point in different directions. With ``server_optimizer = sgd(1.0)``
this is the paper's method; the paper evaluates the average of the last two
server models, which this builder leaves to the caller (``algorithms.swa``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import aggregate, base, local


def fedexp(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    eps: float,
    plan: base.RoundPlan = base.RoundPlan(),
) -> types.FederatedAlgorithm:
  """Builds FedExP; ``eps`` > 0 keeps the step bounded when the mean delta is tiny."""

  def client_fn(state, data, key):
    return local.local_train(loss_fn, client_optimizer, state.params, data, key,
                             **base.train_options(plan, loss_fn, state))

  def server_fn(state, agg: base.Aggregate):
    del state
    p = agg.weight / jnp.maximum(jnp.sum(agg.weight), aggregate.EPS)
    spread = jnp.sum(p * jnp.square(agg.clients.update_norm))
    mean_sq = jnp.square(aggregate.tree_norm(agg.pseudo_grad))
    eta = jnp.maximum(1.0, spread / (2.0 * (mean_sq + eps)))
    return jax.tree.map(lambda d: eta * d, agg.pseudo_grad), None

  # Not client-level DP: the server step reads every client's own update norm.
  return base.stateless(client_fn, server_optimizer, plan, "fedexp", server_fn,
                        privacy=("record",))
