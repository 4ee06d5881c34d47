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

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import base, client_store, local


class FedDynState(NamedTuple):
  params: types.Params
  opt_state: optax.OptState
  round: types.Array
  rng: types.Array
  h: types.Params  # server state h
  client_grads: types.PyTree  # g_i of every client, stacked [N, ...]
  comm: types.PyTree = None  # error-feedback residuals [N, ...] (compression)


def feddyn(
  loss_fn: types.LossFn,
  client_optimizer: optax.GradientTransformation,
  *,
  alpha: float,
  num_clients: int,
  server_optimizer: optax.GradientTransformation | None = None,
  client_chunk_size: int | None = None,
  local_unroll: int | bool = 1,
  compressor: compression.Compressor | None = None,
  error_feedback: bool = False,
) -> types.FederatedAlgorithm:
  """Builds FedDyn with regularization ``alpha`` over ``num_clients`` clients."""
  server_optimizer = server_optimizer or optax.sgd(1.0)
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def init_fn(params, rng) -> FedDynState:
    s = base.init_server_state(
      params, server_optimizer, rng, error_feedback_clients=num_clients if error_feedback else 0
    )
    zeros = jax.tree.map(jnp.zeros_like, s.params)
    return FedDynState(
      s.params,
      s.opt_state,
      s.round,
      s.rng,
      h=zeros,
      client_grads=client_store.init(zeros, num_clients),
      comm=s.comm,
    )

  def round_fn(state: FedDynState, clients: types.ClientBatch):
    def client_fn(w_server, inputs, key):
      data, g_i = inputs

      def grad_fn(p, batch, rng):
        out, g = value_and_grad(p, batch, rng)
        return out, jax.tree.map(
          lambda gg, gi, pp, ws: gg - gi + alpha * (pp - ws), g, g_i, p, w_server
        )

      res = local.local_train(
        None, client_optimizer, w_server, data, key, unroll=local_unroll, grad_fn=grad_fn
      )
      new_g_i = jax.tree.map(lambda gi, w, ws: gi - alpha * (w - ws), g_i, res.params, w_server)
      return res, new_g_i

    out = base.map_stateful_clients(
      client_fn, state, clients, state.client_grads, chunk_size=client_chunk_size,
      compressor=compressor,
    )
    res, store = out.clients, out.store
    # g_i_new - g_i_old = -alpha (w_i - w_server), so the paper's
    # h <- h - alpha/N sum_i (w_i - w_server) is h + (1/N) sum_i (g_i_new - g_i_old).
    change = out.change_sum
    h = jax.tree.map(lambda hh, ch: hh + ch / num_clients, state.h, change)
    pseudo_grad = jax.tree.map(lambda d, hh: d + hh / alpha, base.mean_delta(res), h)
    params, opt_state = base.server_update(
      server_optimizer, state.params, state.opt_state, pseudo_grad
    )
    new_state = FedDynState(
      params, opt_state, state.round + 1, state.rng, h, store, base.comm_update(state, clients, res)
    )
    return new_state, base.round_metrics(res, pseudo_grad)

  return types.FederatedAlgorithm(init_fn, round_fn)
