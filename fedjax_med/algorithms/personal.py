"""Personal layers: which leaves of a model stay with each client, and the round that keeps them.

FedBN (Li et al. 2021: the BatchNorm layers) and FedPer (Arivazhagan et al.
2019: the classifier head) are one algorithm with different personal layers:
each client starts a round from the server model with ITS OWN copy of the
personal leaves, trains every leaf for S steps, keeps its new personal leaves
(a row of the per-client store, ``state.client_state.algorithm``) and uploads
its delta; the server averages every leaf as FedAvg does. The server's copy of
the personal leaves is therefore the average of the participating clients'
(FedBN's "averaged BN"): ``state.params`` stays a usable global model, the one a
site that never joined would get. Client ``c``'s own model is
``alg.client_params(state, c)``.

The layers are chosen by a predicate over the parameter path (``is_local(path)
-> bool``): ``is_batchnorm_leaf`` (FedBN's default), ``matcher(pattern)`` (a
regular expression searched in the ``/``-joined path, e.g.
``"params/Dense_1/"``; ``--config.personal.layers``) or
``fedjax_med.models.head_pattern(model_name)`` (FedPer's and FedRep's default:
the model's classifier head).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local

# is_local(path) -> bool: ``path`` as ``jax.tree_util.tree_flatten_with_path`` gives it.
IsLocal = Callable[[tuple], bool]


def path_name(path) -> str:
  """``"params/Dense_0/kernel"`` for a flattened pytree path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def is_batchnorm_leaf(path) -> bool:
  """BatchNorm parameters and statistics (flax names: ``BatchNorm_*``, ``batch_stats``)."""
  names = path_name(path).split("/")
  return any(n == "batch_stats" or n.startswith("BatchNorm") for n in names)


def matcher(pattern: str) -> IsLocal:
  """``is_local`` of the leaves whose ``/``-joined path contains a match of ``pattern``.

  Raises:
    ValueError: ``pattern`` is not a regular expression.
  """
  try:
    compiled = re.compile(pattern)
  except re.error as e:
    raise ValueError(f"personal layers {pattern!r} is not a regular expression: {e}") from None
  return lambda path: compiled.search(path_name(path)) is not None


def split(params, is_local: IsLocal):
  """``(leaves, treedef, indices of the personal leaves)`` of ``params`` in flatten order."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  idx = tuple(i for i, (path, _) in enumerate(leaves) if is_local(path))
  return [leaf for _, leaf in leaves], treedef, idx


def local_leaves(params, is_local: IsLocal) -> tuple:
  """The personal leaves of ``params`` (flatten order)."""
  leaves, _, idx = split(params, is_local)
  return tuple(leaves[i] for i in idx)


def with_local_leaves(params, own: tuple, is_local: IsLocal):
  """``params`` with its personal leaves replaced by ``own`` (one client's row)."""
  leaves, treedef, idx = split(params, is_local)
  for i, leaf in zip(idx, own, strict=True):
    leaves[i] = leaf
  return jax.tree_util.tree_unflatten(treedef, leaves)


def leaf_mask(params, is_local: IsLocal):
  """A pytree of bools like ``params``: True on the personal leaves."""
  return jax.tree_util.tree_map_with_path(lambda path, _: is_local(path), params)


def check_layers(params, is_local: IsLocal, name: str, what: str) -> None:
  """Raises ``ValueError`` unless ``is_local`` selects some, but not all, trainable leaves."""
  leaves, _, idx = split(params, is_local)
  if not idx:
    raise ValueError(f"{name}: the model has no {what} to keep personal; name other layers "
                     "with --config.personal.layers=<regex over paths like params/Dense_1/>")
  paths = [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  # the trainable leaves: a flax variables dict's "params" collection, else every leaf
  trainable = [i for i, p in enumerate(paths) if p.startswith("params/")] or range(len(paths))
  if set(trainable) <= set(idx):
    raise ValueError(f"{name}: every trainable leaf is personal ({what}), nothing would be "
                     "shared; use algorithm.name=local")


def client_params_fn(is_local: IsLocal) -> Callable[[types.ServerState, int], types.Params]:
  """``client_params(state, c)``: the server model with client ``c``'s personal leaves."""

  def client_params(state: types.ServerState, client: int) -> types.Params:
    own = jax.tree.map(lambda x: x[client], state.client_state.algorithm)
    return with_local_leaves(state.params, own, is_local)

  return client_params


def partial_sharing(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    plan: base.RoundPlan,
    is_local: IsLocal,
    name: str,
    what: str,
) -> types.FederatedAlgorithm:
  """The FedBN / FedPer round: ``is_local`` leaves stay with each client, the rest is FedAvg.

  ``name`` and ``what`` (e.g. ``"BatchNorm leaves"``) are for error messages.

  Raises:
    ValueError (at ``init``): ``is_local`` selects no leaf, or every leaf.
  """
  base.check_plan(plan, name, stateful=True)

  def row(params) -> tuple:
    check_layers(params, is_local, name, what)
    return local_leaves(params, is_local)

  def init_fn(params, rng) -> types.ServerState:
    return base.init_state(params, server_optimizer, rng, plan, client_row=row)

  def client_fn(state, data, own, key):
    start = with_local_leaves(state.params, own, is_local)
    res = local.local_train(loss_fn, client_optimizer, start, data, key, unroll=plan.unroll,
                            lr_scale=base.lr_scale(plan, state.round))
    return res, local_leaves(res.params, is_local)

  round_fn = base.federated_round(client_fn, server_optimizer, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, client_params_fn(is_local))
