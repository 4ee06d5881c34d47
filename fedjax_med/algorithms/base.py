"""Pieces every federated algorithm shares: server state init, round keys,
the averaging round skeleton, the server update and the round metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import aggregate, client_store, local
from fedjax_med.types import PyTree


def init_server_state(
  params, optimizer: optax.GradientTransformation, rng, *, error_feedback_clients: int = 0
) -> types.ServerState:
  """A float32 server state with optimizer state, round 0 and a raw uint32 key.

  ``error_feedback_clients`` > 0 adds a zero residual per client (``comm``) for
  compression with error feedback.
  """
  params = aggregate.cast_floats(params)
  comm = None
  if error_feedback_clients:
    comm = client_store.init(jax.tree.map(jnp.zeros_like, params), error_feedback_clients)
  return types.ServerState(
    params=params,
    opt_state=aggregate.cast_floats(optimizer.init(params)),
    round=jnp.zeros((), jnp.int32),
    rng=raw_key(rng),
    comm=comm,
  )


def comm_rows(state, clients: types.ClientBatch):
  """The sampled clients' error-feedback residuals (None without error feedback)."""
  return None if state.comm is None else client_store.gather(state.comm, clients.client_id)


def comm_update(state, clients: types.ClientBatch, res: local.ClientsResult):
  """The residual store after this round (only real clients are written)."""
  if state.comm is None:
    return None
  return client_store.scatter(state.comm, clients.client_id, res.residual, clients.weight > 0)


def raw_key(rng) -> types.Array:
  """A uint32 [2] key from a raw or typed JAX key (checkpointable as plain data)."""
  rng = jnp.asarray(rng)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return rng.astype(jnp.uint32)


def round_keys(state, num_clients: int) -> types.Array:
  """[C] client keys: ``split(fold_in(state.rng, state.round), C)``."""
  return jax.random.split(jax.random.fold_in(state.rng, state.round), num_clients)


def mean_delta(res: local.ClientsResult) -> types.PyTree:
  """The weighted mean of client deltas (the pseudo-gradient)."""
  total = jnp.maximum(res.weight_sum, 1e-12)
  return jax.tree.map(lambda d: d / total.astype(d.dtype), res.delta_sum)


def server_update(optimizer, params, opt_state, pseudo_grad):
  """``optimizer.update`` on the pseudo-gradient, then ``optax.apply_updates``."""
  updates, opt_state = optimizer.update(pseudo_grad, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def round_metrics(res: local.ClientsResult, pseudo_grad) -> types.RoundMetrics:
  return types.RoundMetrics(
    client_loss=res.loss,
    client_steps=res.steps,
    update_norm=res.update_norm,
    pseudo_grad_norm=aggregate.tree_norm(pseudo_grad),
  )


class StatefulClients(NamedTuple):
  clients: local.ClientsResult  # as map_clients; ``extra`` = the clients' new state rows
  old_rows: PyTree  # the sampled clients' state rows before the round [C, ...]
  store: PyTree  # the store with the real clients' new rows written back
  change_sum: PyTree  # sum over real clients of (new row - old row)


def map_stateful_clients(
    client_fn,
    state,
    clients: types.ClientBatch,
    store,
    *,
    chunk_size: int | None = None,
    compressor: compression.Compressor | None = None,
) -> StatefulClients:
  """``map_clients`` for algorithms with per-client state kept in ``store`` [N, ...].

  Gathers the sampled clients' rows, runs ``client_fn(server_params, (data_c,
  row_c), key_c) -> (LocalResult, new_row_c)`` on every client, and scatters the
  new rows of real (weight > 0) clients back.
  """
  old = client_store.gather(store, clients.client_id)
  res = local.map_clients(
      client_fn,
      state.params,
      (local.client_data(clients), old),
      clients.weight,
      round_keys(state, clients.weight.shape[0]),
      chunk_size=chunk_size,
      compressor=compressor,
      residual=comm_rows(state, clients),
  )
  valid = clients.weight > 0
  change = aggregate.weighted_sum(
      jax.tree.map(jnp.subtract, res.extra, old), valid.astype(jnp.float32)
  )
  new_store = client_store.scatter(store, clients.client_id, res.extra, valid)
  return StatefulClients(res, old, new_store, change)


def averaging_algorithm(
  client_fn: Callable[[types.Params, dict, types.PRNGKey], local.LocalResult],
  server_optimizer: optax.GradientTransformation,
  *,
  client_chunk_size: int | None = None,
  compressor: compression.Compressor | None = None,
  error_feedback_clients: int = 0,
) -> types.FederatedAlgorithm:
  """FedAvg's round around any stateless ``client_fn(server_params, data_c, key_c)``.

  FedAvg, FedProx and FedSAM differ only in their ``client_fn``. With a
  ``compressor`` the server aggregates the decoded compressed deltas; with
  ``error_feedback_clients`` = N each of the N clients keeps a residual.
  """

  def init_fn(params: types.Params, rng: types.PRNGKey) -> types.ServerState:
    return init_server_state(
      params, server_optimizer, rng, error_feedback_clients=error_feedback_clients
    )

  def round_fn(state: types.ServerState, clients: types.ClientBatch):
    keys = round_keys(state, clients.weight.shape[0])
    res = local.map_clients(
      client_fn,
      state.params,
      local.client_data(clients),
      clients.weight,
      keys,
      chunk_size=client_chunk_size,
      compressor=compressor,
      residual=comm_rows(state, clients),
    )
    pseudo_grad = mean_delta(res)
    params, opt_state = server_update(server_optimizer, state.params, state.opt_state, pseudo_grad)
    new_state = types.ServerState(
      params, opt_state, state.round + 1, state.rng, comm_update(state, clients, res)
    )
    return new_state, round_metrics(res, pseudo_grad)

  return types.FederatedAlgorithm(init_fn, round_fn)
