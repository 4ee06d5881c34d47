"""Federated Averaging with a server optimizer (FedAvg / FedAvgM / FedAdam).

McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017; Reddi et al., "Adaptive Federated
Optimization", ICLR 2021 (server optimizers on the pseudo-gradient).

One round: every client starts from the server params and runs S steps of the
client optimizer (fresh state each round); ``delta_c = server - client_c``;
the pseudo-gradient is the weight-averaged delta; the server applies
``server_optimizer`` to it. With ``optax.sgd(1.0)`` on the server this is plain
FedAvg; with momentum it is FedAvgM, with ``optax.adam`` FedAdam.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import aggregate, local


def init_server_state(params, optimizer: optax.GradientTransformation, rng) -> types.ServerState:
  """A float32 server state with optimizer state, round 0 and a raw uint32 key."""
  params = aggregate.cast_floats(params)
  rng = jnp.asarray(rng)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return types.ServerState(
      params=params,
      opt_state=aggregate.cast_floats(optimizer.init(params)),
      round=jnp.zeros((), jnp.int32),
      rng=rng.astype(jnp.uint32),
  )


def round_keys(state: types.ServerState, num_clients: int) -> types.Array:
  """[C] client keys: ``split(fold_in(state.rng, state.round), C)``."""
  return jax.random.split(jax.random.fold_in(state.rng, state.round), num_clients)


def fedavg(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    client_chunk_size: int | None = None,
    local_unroll: int | bool = 1,
) -> types.FederatedAlgorithm:
  """Builds FedAvg as an ``(init, round)`` pair.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``; see ``types.LossFn``.
    client_optimizer: optax transform run for S local steps on each client.
    server_optimizer: optax transform applied to the averaged delta.
    client_chunk_size: clients vectorized together (``None`` = all at once).
    local_unroll: ``lax.scan`` unroll of the local steps.

  Returns:
    ``FederatedAlgorithm(init, round)``; ``round(state, clients)`` is pure and
    jit-able as one function.
  """
  client_fn = functools.partial(local.local_train, loss_fn, client_optimizer, unroll=local_unroll)

  def init_fn(params: types.Params, rng: types.PRNGKey) -> types.ServerState:
    return init_server_state(params, server_optimizer, rng)

  def round_fn(state: types.ServerState, clients: types.ClientBatch):
    keys = round_keys(state, clients.weight.shape[0])
    res = local.map_clients(
        client_fn,
        state.params,
        local.client_data(clients),
        clients.weight,
        keys,
        chunk_size=client_chunk_size,
    )
    total = jnp.maximum(res.weight_sum, 1e-12)
    pseudo_grad = jax.tree.map(lambda d: d / total.astype(d.dtype), res.delta_sum)
    updates, opt_state = server_optimizer.update(pseudo_grad, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = types.ServerState(params, opt_state, state.round + 1, state.rng)
    metrics = types.RoundMetrics(
        client_loss=res.loss,
        client_steps=res.steps,
        update_norm=res.update_norm,
        pseudo_grad_norm=aggregate.tree_norm(pseudo_grad),
    )
    return new_state, metrics

  return types.FederatedAlgorithm(init_fn, round_fn)
