"""FedBN: normalization layers stay local to each client.

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021. Each client keeps its own BatchNorm scale/bias and
running statistics across rounds (all clients start from the initial model's
values); every other parameter is averaged as in FedAvg.

Global model for evaluation: the server's copy of the BatchNorm leaves is the
average of the participating clients' local ones (FedAvg applied to them), so
``state.params`` is a usable global model ("averaged BN"). Client ``c``'s own
model (its own BatchNorm layers) is ``alg.client_params(state, c)``; the
per-client evaluation (``fedjax_med/evaluation.py``) uses it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local


def is_batchnorm_leaf(path) -> bool:
  """BatchNorm parameters and statistics (flax names: ``BatchNorm_*``, ``batch_stats``)."""
  names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
  return any(n == "batch_stats" or n.startswith("BatchNorm") for n in names)


def _split(params, is_local: Callable):
  """``(leaves, treedef, indices of the local leaves)``."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  idx = tuple(i for i, (path, _) in enumerate(leaves) if is_local(path))
  return [leaf for _, leaf in leaves], treedef, idx


def with_local_leaves(params, own: tuple, is_local: Callable = is_batchnorm_leaf):
  """``params`` with its local leaves replaced by ``own`` (one client's row)."""
  leaves, treedef, idx = _split(params, is_local)
  for i, leaf in zip(idx, own, strict=True):
    leaves[i] = leaf
  return jax.tree_util.tree_unflatten(treedef, leaves)


def fedbn(
  loss_fn: types.LossFn,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation,
  *,
  plan: base.RoundPlan,
  is_local: Callable = is_batchnorm_leaf,
) -> types.FederatedAlgorithm:
  """Builds FedBN. ``is_local(path) -> bool`` selects the leaves kept per client.

  ``state.client_state.algorithm`` is the tuple of every client's local leaves
  (each stacked ``[N, ...]``); ``client_params(state, c)`` is client ``c``'s model.

  Raises:
    ValueError (at ``init``): the model has no local leaves (e.g. GroupNorm).
  """
  base.check_plan(plan, "fedbn", stateful=True)

  def local_leaves(params) -> tuple:
    leaves, _, idx = _split(params, is_local)
    if not idx:
      raise ValueError("fedbn: the model has no BatchNorm leaves to keep local; use fedavg")
    return tuple(leaves[i] for i in idx)

  def init_fn(params, rng) -> types.ServerState:
    return base.init_state(params, server_optimizer, rng, plan, client_row=local_leaves)

  def client_fn(state, data, own, key):
    start = with_local_leaves(state.params, own, is_local)
    res = local.local_train(loss_fn, client_optimizer, start, data, key, unroll=plan.unroll,
                            lr_scale=base.lr_scale(plan, state.round))
    return res, local_leaves(res.params)

  def client_params(state: types.ServerState, client: int) -> types.Params:
    own = jax.tree.map(lambda x: x[client], state.client_state.algorithm)
    return with_local_leaves(state.params, own, is_local)

  round_fn = base.federated_round(client_fn, server_optimizer, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, client_params)
