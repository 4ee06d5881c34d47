"""FedBN: normalization layers stay local to each client.

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021. Each client keeps its own BatchNorm scale/bias and
running statistics across rounds (all clients start from the initial model's
values); every other parameter is averaged as in FedAvg.

Global model for evaluation: the server's copy of the BatchNorm leaves is the
average of the participating clients' local ones (FedAvg applied to them), so
``state.params`` is a usable global model ("averaged BN"). Evaluating each
client's own BN on its own data needs per-client test splits and is left to
the caller: ``client_params(state.params, state.local_norms, c)`` is client
``c``'s own model (used for per-client accuracy, fedjax_med/client_eval.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import base, client_store, local


class FedBNState(NamedTuple):
  params: types.Params
  opt_state: optax.OptState
  round: types.Array
  rng: types.Array
  local_norms: tuple  # the local leaves of every client, each stacked [N, ...]
  comm: types.PyTree = None  # error-feedback residuals [N, ...] (compression)


def is_batchnorm_leaf(path) -> bool:
  """BatchNorm parameters and statistics (flax names: ``BatchNorm_*``, ``batch_stats``)."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  return any(n == "batch_stats" or n.startswith("BatchNorm") for n in names)


def client_params(params, local_norms: tuple, client: int, is_local: Callable = is_batchnorm_leaf):
  """Client ``client``'s personalized model: ``params`` with its own local (BatchNorm) leaves."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  idx = [i for i, (path, _) in enumerate(leaves) if is_local(path)]
  out = [leaf for _, leaf in leaves]
  for i, stacked in zip(idx, local_norms, strict=True):
    out[i] = stacked[client]
  return jax.tree_util.tree_unflatten(treedef, out)


def fedbn(
  loss_fn: types.LossFn,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation,
  *,
  num_clients: int,
  is_local: Callable = is_batchnorm_leaf,
  client_chunk_size: int | None = None,
  local_unroll: int | bool = 1,
  compressor: compression.Compressor | None = None,
  error_feedback: bool = False,
) -> types.FederatedAlgorithm:
  """Builds FedBN. ``is_local(path) -> bool`` selects the leaves kept per client.

  Raises:
    ValueError (at ``init``): the model has no local leaves (e.g. GroupNorm).
  """

  def split(params):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    idx = tuple(i for i, (path, _) in enumerate(leaves) if is_local(path))
    return [leaf for _, leaf in leaves], treedef, idx

  def init_fn(params, rng) -> FedBNState:
    s = base.init_server_state(
      params, server_optimizer, rng, error_feedback_clients=num_clients if error_feedback else 0
    )
    leaves, _, idx = split(s.params)
    if not idx:
      raise ValueError("fedbn: the model has no BatchNorm leaves to keep local; use fedavg")
    return FedBNState(
      s.params,
      s.opt_state,
      s.round,
      s.rng,
      local_norms=client_store.init(tuple(leaves[i] for i in idx), num_clients),
      comm=s.comm,
    )

  def round_fn(state: FedBNState, clients: types.ClientBatch):
    def client_fn(server_params, inputs, key):
      data, own = inputs
      leaves, treedef, idx = split(server_params)
      for i, leaf in zip(idx, own, strict=True):
        leaves[i] = leaf
      start = jax.tree_util.tree_unflatten(treedef, leaves)
      res = local.local_train(loss_fn, client_optimizer, start, data, key, unroll=local_unroll)
      new_leaves, _, _ = split(res.params)
      return res, tuple(new_leaves[i] for i in idx)

    out = base.map_stateful_clients(
      client_fn, state, clients, state.local_norms, chunk_size=client_chunk_size,
      compressor=compressor,
    )
    res, store = out.clients, out.store
    pseudo_grad = base.mean_delta(res)
    params, opt_state = base.server_update(
      server_optimizer, state.params, state.opt_state, pseudo_grad
    )
    new_state = FedBNState(
      params, opt_state, state.round + 1, state.rng, store, base.comm_update(state, clients, res)
    )
    return new_state, base.round_metrics(res, pseudo_grad)

  return types.FederatedAlgorithm(init_fn, round_fn)
