"""SCAFFOLD: stochastic controlled averaging (option II control variates).

Karimireddy et al., "SCAFFOLD: Stochastic Controlled Averaging for Federated
Learning", ICML 2020, Algorithm 1. Client i corrects each local SGD gradient by
``c - c_i``; after K real steps with learning rate ``lr`` its control variate
becomes ``c_i+ = c_i - c + (x - y_i) / (K lr)`` (option II). The server moves
``x`` with its optimizer on the weighted mean of ``x - y_i`` and sets
``c <- c + (1/N) sum_{i in S} (c_i+ - c_i)`` over the N clients.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import base, client_store, local


class ScaffoldState(NamedTuple):
  params: types.Params
  opt_state: optax.OptState
  round: types.Array
  rng: types.Array
  control: types.Params  # c, the server control variate
  client_controls: types.PyTree  # c_i of every client, stacked [N, ...]
  comm: types.PyTree = None  # error-feedback residuals [N, ...] (compression)


def scaffold(
  loss_fn: types.LossFn,
  client_lr: float,
  server_optimizer: optax.GradientTransformation,
  *,
  num_clients: int,
  client_chunk_size: int | None = None,
  local_unroll: int | bool = 1,
  compressor: compression.Compressor | None = None,
  error_feedback: bool = False,
) -> types.FederatedAlgorithm:
  """Builds SCAFFOLD; clients run corrected SGD with learning rate ``client_lr``.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``.
    client_lr: local SGD learning rate (also used in the option II update).
    server_optimizer: applied to the weighted mean delta (``sgd(1.0)`` = paper with eta_g = 1).
    num_clients: N, the total number of clients (size of the control-variate store).
    client_chunk_size, local_unroll: as ``fedavg``.
  """
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
  client_tx = optax.sgd(client_lr)

  def init_fn(params, rng) -> ScaffoldState:
    s = base.init_server_state(
      params, server_optimizer, rng, error_feedback_clients=num_clients if error_feedback else 0
    )
    zeros = jax.tree.map(jnp.zeros_like, s.params)
    return ScaffoldState(
      s.params,
      s.opt_state,
      s.round,
      s.rng,
      control=zeros,
      client_controls=client_store.init(zeros, num_clients),
      comm=s.comm,
    )

  def round_fn(state: ScaffoldState, clients: types.ClientBatch):
    c = state.control

    def client_fn(x, inputs, key):
      data, c_i = inputs
      correction = jax.tree.map(jnp.subtract, c, c_i)

      def grad_fn(p, batch, rng):
        out, g = value_and_grad(p, batch, rng)
        return out, jax.tree.map(jnp.add, g, correction)

      res = local.local_train(None, client_tx, x, data, key, unroll=local_unroll, grad_fn=grad_fn)
      k_lr = jnp.maximum(res.steps, 1).astype(jnp.float32) * client_lr
      new_c_i = jax.tree.map(lambda ci, cc, xx, y: ci - cc + (xx - y) / k_lr, c_i, c, x, res.params)
      new_c_i = jax.tree.map(lambda n, o: jnp.where(res.steps > 0, n, o), new_c_i, c_i)
      return res, new_c_i

    out = base.map_stateful_clients(
      client_fn, state, clients, state.client_controls, chunk_size=client_chunk_size,
      compressor=compressor,
    )
    res, store = out.clients, out.store
    control = jax.tree.map(lambda cc, d: cc + d / num_clients, c, out.change_sum)
    pseudo_grad = base.mean_delta(res)
    params, opt_state = base.server_update(
      server_optimizer, state.params, state.opt_state, pseudo_grad
    )
    new_state = ScaffoldState(
      params,
      opt_state,
      state.round + 1,
      state.rng,
      control,
      store,
      base.comm_update(state, clients, res),
    )
    return new_state, base.round_metrics(res, pseudo_grad)

  return types.FederatedAlgorithm(init_fn, round_fn)
