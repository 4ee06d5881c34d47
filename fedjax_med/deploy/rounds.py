"""The one-jit round cut in two: what a site computes, and what the server does with it.

``base.federated_round`` is gather -> map clients -> scatter -> aggregate -> server
update in one function. A deployed round runs the map on the sites, one client per
site (:func:`site_update`: the algorithm's own ``client_fn``, the delta, its
compression with error feedback, the finite check, as ``local.map_clients`` does for
one client) and the rest on the server (:func:`server_round`: the weighted aggregate,
``server_fn``, the server optimizer and the empty-round rule of ``federated_round``).
Client state rows (SCAFFOLD's ``c_i``, error-feedback residuals) stay at the site;
the site uploads the change of its algorithm row, which is all the server uses
(``Aggregate.row_change_sum``).

A slot whose site did not answer (dropped out, killed, timed out) or whose result was
non-finite weighs 0, exactly like the simulation's padding and failed clients.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med import compression, types
from fedjax_med.algorithms import aggregate, base, local
from fedjax_med.types import PyTree


class SiteResult(NamedTuple):
  """One client's reply (device arrays), and its new private state."""

  upload: PyTree  # the delta (uncompressed) or, with a compressor, the payload per leaf
  row_change: PyTree  # new algorithm row - old (stateful algorithms), else None
  loss: types.Array  # [S]
  steps: types.Array  # [] int32
  ok: types.Array  # [] bool: every value finite (else the server treats it as dropped)
  new_row: types.ClientState | None  # the site's next state row (kept if not ok)
  norm: types.Array  # [] the delta's L2 norm before any clipping (0 if not ok)


def site_update(parts: base.RoundParts, state: types.ServerState, data: dict,
                row: types.ClientState | None, key: types.PRNGKey,
                clip_norm: types.Array | None = None) -> SiteResult:
  """One client's half of a round (jit it at the call site).

  Under client-level DP (``clip_norm``: the server's clip norm of the round) the upload
  is the delta clipped to ``clip_norm``, as ``local.map_clients`` clips it; ``norm`` is
  its norm before clipping (adaptive clipping counts the clients under the norm).

  Args:
    parts: the algorithm's :class:`~base.RoundParts`.
    state: the server state the site received (``params``, ``server`` extras, ``round``,
      ``opt_state`` / ``client_state`` unused); ``client_state`` must be None.
    data: this client's ``{"image", "label", "mask"}`` [S, B, ...].
    row: this client's state row (``ClientState``), or None for a stateless run.
    key: this client's key of the round (slot ``c`` of ``base.round_keys``).
  """
  plan = parts.plan
  alg_row = None if row is None else row.algorithm
  res, new_alg_row = parts.client_fn(state, data, alg_row, key)
  delta = jax.tree.map(jnp.subtract, state.params, res.params)
  ok = all_finite((delta, res.loss))
  upload, new_residual = delta, None
  if plan.compressor is not None:
    residual = None if row is None else row.residual
    upload, sent, new_residual = compression.encode_tree(
        plan.compressor, delta, jax.random.fold_in(key, 1), residual)
    ok = ok & all_finite(sent)
  ok = ok & all_finite((new_alg_row, new_residual))
  change = None
  if alg_row is not None:
    change = jax.tree.map(jnp.subtract, new_alg_row, alg_row)
  new_row = None if row is None else types.ClientState(new_alg_row, new_residual)
  if row is not None:  # a failed client keeps its old row (as client_store.scatter)
    new_row = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new_row, row)
  norm = jnp.where(ok, aggregate.stacked_norm(jax.tree.map(lambda x: x[None], upload))[0], 0.0)
  if clip_norm is not None:  # compression is refused with DP: upload is the delta
    from fedjax_med.privacy import dp_fedavg  # optional extra

    zeroed = jax.tree.map(lambda x: jnp.where(ok, x, jnp.zeros_like(x))[None], upload)
    upload = jax.tree.map(lambda x: x[0], dp_fedavg.clip_deltas(zeroed, clip_norm))
  return SiteResult(upload, change, res.loss, res.steps, ok, new_row, norm)


def all_finite(tree: PyTree) -> types.Array:
  """[] bool: every floating entry of ``tree`` is finite (True without any)."""
  oks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
         if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(oks)) if oks else jnp.asarray(True)


def decode_upload(compressor: compression.Compressor | None, payloads, params: PyTree) -> PyTree:
  """The delta a site's upload stands for (shaped like ``params``)."""
  if compressor is None:
    return payloads
  return compression.decode_tree(compressor, payloads, params)


class Replies(NamedTuple):
  """The round's replies, stacked over its C client slots (server side)."""

  deltas: PyTree  # [C, ...] decoded deltas (zeros where no reply)
  row_change: PyTree  # [C, ...] or None
  weight: types.Array  # [C] the slot's example count; 0 = dropped, missing or failed
  loss: types.Array  # [C, S]
  steps: types.Array  # [C] int32
  norm: types.Array | None = None  # [C] norms before clipping (client-level DP)


def server_round(parts: base.RoundParts, state: types.ServerState,
                 replies: Replies) -> tuple[types.ServerState, types.RoundMetrics]:
  """The server's half of a round (jit it at the call site): aggregate, ``server_fn``,
  server optimizer; a round with no real reply changes nothing but the round counter.

  The same steps as ``base.federated_round`` after its client map; the sum over
  clients may be taken in another order than the simulation's chunks (float
  round-off only).
  """
  plan = parts.plan
  dp = plan.client_dp
  weight = replies.weight
  if parts.uniform or dp is not None:  # DP-FedAvg: every client weighs 1
    weight = (weight > 0).astype(weight.dtype)
  kept = weight > 0
  deltas = local.zero_rows(replies.deltas, kept)
  change_sum = None
  if replies.row_change is not None:
    change_sum = aggregate.weighted_sum(local.zero_rows(replies.row_change, kept),
                                        kept.astype(jnp.float32))
  agg = plan.aggregator
  weight_sum = jnp.sum(weight)
  privacy, privacy_metrics = state.privacy, None
  if dp is not None:  # the sites clipped: the sum, noised as the simulation's server does
    norms = replies.norm * kept
    mean, privacy, privacy_metrics = base.client_dp_release(
        dp, state, aggregate.weighted_sum(deltas, weight), norms, kept)
  elif agg.streaming:
    mean = agg.aggregate(aggregate.weighted_sum(deltas, weight), weight_sum)
  else:
    mean = agg.aggregate(deltas, weight)
  if dp is None:
    norms = aggregate.stacked_norm(deltas) * kept
  clients = local.ClientsResult(None, weight_sum, replies.loss, replies.steps, norms,
                                weight=weight, dropped=jnp.zeros_like(kept))
  aggregated = base.Aggregate(mean, change_sum, clients, weight)
  params, opt_state, server, pseudo_grad = base.server_step(
      parts.server_optimizer, parts.server_fn, state._replace(client_state=None), aggregated,
      hold_if_empty=dp is None)  # under DP an empty cohort still releases noise
  new_state = state._replace(params=params, opt_state=opt_state, round=state.round + 1,
                             server=server, privacy=privacy)
  return new_state, base.round_metrics(clients, pseudo_grad)._replace(privacy=privacy_metrics)


def to_arrays(tree: Any) -> list[np.ndarray]:
  """The leaves of ``tree`` as numpy arrays (what an ``ArrayRecord`` carries)."""
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def from_arrays(template: Any, arrays: list[np.ndarray]) -> Any:
  """``arrays`` (from :func:`to_arrays`) back into the structure of ``template``.

  Raises:
    ValueError: a count, shape or dtype that differs from ``template``'s.
  """
  leaves, treedef = jax.tree.flatten(template)
  if len(leaves) != len(arrays):
    raise ValueError(f"expected {len(leaves)} arrays, got {len(arrays)}")
  for i, (t, a) in enumerate(zip(leaves, arrays, strict=True)):
    if tuple(np.shape(t)) != tuple(a.shape) or np.dtype(t.dtype) != a.dtype:
      raise ValueError(f"array {i}: expected {np.shape(t)} {np.dtype(t.dtype)}, got "
                       f"{a.shape} {a.dtype}")
  return jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays])
