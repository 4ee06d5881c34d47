"""The local-update primitive and the client map, shared by every algorithm.

``local_train`` runs S optimizer steps on one client (``lax.scan``); ``map_clients``
vmaps it over clients, optionally in chunks (``lax.scan`` over chunks of the
client axis, so peak memory follows the chunk, not the number of clients), and
returns the weighted sum of client deltas, small per-client metrics, and any
per-client outputs an algorithm needs (e.g. SCAFFOLD's new control variates).

Algorithms customise local training through two hooks: the ``loss_fn`` they
pass (FedProx adds a proximal term) and a ``grad_fn`` (SCAFFOLD/FedDyn add a
gradient correction, FedSAM evaluates the gradient at a perturbed point).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import aggregate

VARIABLES_KEY = "variables"


# grad_fn(params, batch, rng) -> ((loss, aux), grads), as jax.value_and_grad(loss_fn, has_aux=True).
GradFn = Callable[
  [types.Params, dict, types.PRNGKey], tuple[tuple[types.Array, dict], types.Params]
]


class LocalResult(NamedTuple):
  params: types.Params  # client params after S steps
  loss: types.Array  # [S] loss of each step (0 where the step had no data)
  steps: types.Array  # [] int32 steps that had real data


def apply_variable_updates(params: types.Params, aux: dict) -> types.Params:
  """Overwrites the collections that ``loss_fn`` returned in ``aux["variables"]``."""
  if isinstance(aux, dict) and VARIABLES_KEY in aux:
    return {**params, **aux[VARIABLES_KEY]}
  return params


def run_steps(
  loss_fn: types.LossFn,
  optimizer: optax.GradientTransformation,
  params: types.Params,
  opt_state: optax.OptState,
  data: dict,
  keys: types.Array,
  *,
  unroll: int | bool = 1,
  grad_fn: GradFn | None = None,
  lr_scale: types.Array | float | None = None,
  active: types.Array | None = None,
):
  """``lax.scan`` of optimizer steps over the leading axis of ``data``.

  A step whose mask is all False leaves params and optimizer state unchanged
  (the padding trick of fedjax's ``'__mask__'``), unless ``active`` says it runs.

  Args:
    grad_fn: replaces ``jax.value_and_grad(loss_fn, has_aux=True)`` (then
      ``loss_fn`` is unused and may be None).
    lr_scale: multiplies every update of ``optimizer`` (a scalar, may be traced):
      the learning rate times ``lr_scale`` for SGD, momentum and AdamW alike,
      without changing the optimizer state. ``RoundPlan.client_lr_scale`` gives
      it per round (a schedule over the whole run). ``None`` = 1.
    active: [S] bool, the steps that run; ``None`` = the steps with a real
      example. DP-SGD runs every step of a real client: a Poisson batch may be
      empty, and its step (noise only) is one the accountant counts.

  Returns:
    ``(params, opt_state, losses [S], ran [S] bool)``.
  """
  if grad_fn is None:
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  if active is None:
    active = jnp.any(data["mask"].reshape(data["mask"].shape[0], -1), axis=1)

  def step(carry, xs):
    p, o = carry
    batch, key, has_data = xs
    (loss, aux), grads = grad_fn(p, batch, key)
    updates, new_o = optimizer.update(grads, o, p)
    if lr_scale is not None:
      updates = jax.tree.map(lambda u: u * jnp.asarray(lr_scale, u.dtype), updates)
    new_p = apply_variable_updates(optax.apply_updates(p, updates), aux)
    carry = jax.tree.map(lambda n, old: jnp.where(has_data, n, old), (new_p, new_o), (p, o))
    return carry, (jnp.where(has_data, loss, 0.0), has_data)

  (params, opt_state), (losses, has_data) = jax.lax.scan(
    step, (params, opt_state), (data, keys, active), unroll=unroll
  )
  return params, opt_state, losses, has_data


def local_train(loss_fn: types.LossFn, optimizer: optax.GradientTransformation,
                params: types.Params, data: dict, rng: types.PRNGKey, **scan_options) -> LocalResult:
  """Runs ``S`` steps of ``optimizer`` from ``params`` on one client's data.

  The optimizer state starts fresh. Step ``s`` uses ``data[k][s]``; a step
  whose mask is all False leaves params and optimizer state unchanged.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``.
    optimizer: the client optax transformation.
    params: starting parameters.
    data: dict with ``image`` [S, B, ...], ``label`` [S, B], ``mask`` [S, B].
    rng: this client's key; step ``s`` gets ``split(rng, S)[s]``.
    **scan_options: ``unroll`` (``lax.scan`` unroll factor, ``True`` = fully
      unrolled), ``grad_fn`` (gradient override) and ``lr_scale`` (this round's
      learning-rate multiplier), as ``run_steps``; ``every_step=True`` runs all
      S steps, also those without a real example (DP-SGD).

  Returns:
    A :class:`LocalResult`.
  """
  num_steps = data["mask"].shape[0]
  keys = jax.random.split(rng, num_steps)
  if scan_options.pop("every_step", False):
    scan_options["active"] = jnp.ones((num_steps,), bool)
  params, _, losses, has_data = run_steps(
    loss_fn, optimizer, params, optimizer.init(params), data, keys, **scan_options
  )
  return LocalResult(params, losses, jnp.sum(has_data.astype(jnp.int32)))


class ClientsResult(NamedTuple):
  delta_sum: types.PyTree  # sum_c weight_c * delta_c over kept clients (None when ``stacked``)
  weight_sum: types.Array  # [] sum_c weight_c over kept clients (failed clients weigh 0)
  loss: types.Array  # [C, S] (as computed: a failed client's may be non-finite)
  steps: types.Array  # [C] int32
  update_norm: types.Array  # [C] ||delta_c|| (0 for padding and failed clients)
  extra: types.PyTree = None  # per-client outputs of client_fn, stacked [C, ...]
  residual: types.PyTree = None  # new error-feedback residuals [C, ...] (compression)
  deltas: types.PyTree = None  # every client's (decoded) delta [C, ...], 0 where failed (``stacked``)
  weight: types.Array = None  # [C] the weights aggregated: the input's, 0 for failed clients
  dropped: types.Array = None  # [C] bool: a real client (weight > 0) whose result was non-finite


def finite_rows(stacked: types.PyTree) -> types.Array:
  """[C] bool: every floating entry of slice ``c`` of every leaf (leaves [C, ...]) is finite."""
  oks = [jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
         for x in jax.tree.leaves(stacked) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return functools.reduce(jnp.logical_and, oks, True)  # True (broadcasts) with no float leaf


def zero_rows(stacked: types.PyTree, keep: types.Array) -> types.PyTree:
  """``stacked`` with slice ``c`` replaced by zeros where ``keep[c]`` is False.

  A select, not a product: ``0 * nan`` is ``nan``, so a weight of 0 alone would not
  keep a failed client's non-finite values out of a weighted sum.
  """
  def mask(x):
    k = keep.reshape(keep.shape + (1,) * (x.ndim - 1))
    return jnp.where(k, x, jnp.zeros((), x.dtype))

  return jax.tree.map(mask, stacked)


def client_data(clients: types.ClientBatch) -> dict:
  """The per-step batch dict that ``loss_fn`` sees, stacked [C, S, B, ...]."""
  return {"image": clients.image, "label": clients.label, "mask": clients.mask}


def _pad_clients(tree, pad: int):
  return jax.tree.map(
    lambda x: jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]), tree
  )


def map_clients(
  client_fn: Callable[[types.PyTree, types.PRNGKey], tuple[LocalResult, types.PyTree]],
  server_params: types.Params,
  inputs: types.PyTree,
  weight: types.Array,
  keys: types.Array,
  *,
  chunk_size: int | None = None,
  compressor: compression.Compressor | None = None,
  residual: types.PyTree | None = None,
  stacked: bool = False,
  clip_norm: types.Array | None = None,
) -> ClientsResult:
  """Runs ``client_fn`` on every client and sums (or stacks) their deltas.

  Args:
    client_fn: ``(inputs_c, key_c) -> (LocalResult, extra_c)`` for one client;
      ``extra_c`` is any per-client pytree (``None`` for none), returned stacked
      as ``ClientsResult.extra``. Values shared by all clients (the server
      state) are closed over.
    server_params: the starting point of every client; ``delta_c = server_params
      - client_params_c``.
    inputs: per-client inputs, any pytree with leading axis C (the
      ``client_data`` dict, possibly with the clients' state rows).
    weight: [C] aggregation weights (0 = padding client).
    keys: [C] client keys.
    chunk_size: clients vectorized together. ``None`` (or >= C) vmaps all
      clients at once; otherwise ``lax.scan`` runs over ceil(C / chunk) chunks
      (C is padded with zero-weight clients), bounding peak memory by the chunk.
    compressor: if given, each client's delta is compressed (``compression``)
      and the server aggregates what it decodes; the client's key for it is
      ``fold_in(key_c, 1)``.
    residual: error-feedback memory [C, ...] shaped like the params (with
      ``compressor``); the new one is returned in ``ClientsResult.residual``.
    stacked: return every client's delta ([C, ...] in ``deltas``) instead of
      the weighted sum (memory grows with C: for stacked aggregators).
    clip_norm: client-level DP: every (decoded) delta is clipped to this L2
      norm before it is summed; ``update_norm`` stays the norm before clipping.

  Failed clients: a real client whose loss, delta (before and after compression),
  ``extra`` or new residual holds a non-finite value is dropped: its weight becomes 0,
  its delta is replaced by zeros before it is summed, clipped or stacked (a select,
  since ``0 * nan = nan``), and ``ClientsResult.dropped`` marks it; the caller keeps
  its old state row.

  Returns:
    A :class:`ClientsResult`; per-client arrays keep the original C.
  """
  num_clients = weight.shape[0]

  def run_chunk(chunk):
    d, w, k, r = chunk
    res, extra = jax.vmap(client_fn)(d, k)
    delta = jax.tree.map(lambda s, c: s[None] - c, server_params, res.params)
    ok = finite_rows((delta, res.loss))
    new_r = None
    if compressor is not None:
      ckeys = jax.vmap(lambda kk: jax.random.fold_in(kk, 1))(k)
      compress = lambda x, kk, rr: compression.compress_tree(compressor, x, kk, rr)  # noqa: E731
      delta, new_r = jax.vmap(compress)(delta, ckeys, r)
      ok = ok & finite_rows(delta)
    ok = ok & finite_rows((extra, new_r))  # a state row to keep must be finite too
    dropped = ~ok & (w > 0)
    w = jnp.where(ok, w, jnp.zeros((), w.dtype))
    delta = zero_rows(delta, ok)
    # Padding and failed clients (weight 0) report a zero update norm.
    per_client = (res.loss, res.steps, aggregate.stacked_norm(delta) * (w > 0), extra, new_r, w,
                  dropped)
    if clip_norm is not None:
      from fedjax_med.privacy import dp_fedavg  # optional extra

      delta = dp_fedavg.clip_deltas(delta, clip_norm)
    if stacked:
      return None, per_client + (delta,)
    return aggregate.weighted_sum(delta, w), per_client + (None,)

  if chunk_size is None or chunk_size >= num_clients:
    delta_sum, per_client = run_chunk((inputs, weight, keys, residual))
  else:
    num_chunks = -(-num_clients // chunk_size)
    pad = num_chunks * chunk_size - num_clients
    chunks = (inputs, weight, keys, residual)
    if pad:
      chunks = _pad_clients(chunks, pad)
    # Chunk i holds clients {i, i + num_chunks, i + 2 * num_chunks, ...}: the
    # reshape to [chunk, num_chunks, ...] is free and keeps a client axis that is
    # sharded in contiguous blocks local to each device; each scan step slices its
    # chunk out of axis 1, so the input is never copied whole (memory ~ chunk).
    chunks = jax.tree.map(lambda x: x.reshape((chunk_size, num_chunks) + x.shape[1:]), chunks)

    def body(acc, i):
      chunk = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, 1, keepdims=False), chunks)
      delta_sum, per_client = run_chunk(chunk)
      return (None if stacked else jax.tree.map(jnp.add, acc, delta_sum)), per_client

    zeros = None if stacked else jax.tree.map(jnp.zeros_like, server_params)
    delta_sum, per_client = jax.lax.scan(body, zeros, jnp.arange(num_chunks))
    per_client = jax.tree.map(
      lambda x: jnp.moveaxis(x, 0, 1).reshape((num_chunks * chunk_size,) + x.shape[2:])[
        :num_clients
      ],
      per_client,
    )
  loss, steps, norms, extra, new_r, kept_weight, dropped, deltas = per_client
  return ClientsResult(delta_sum, jnp.sum(kept_weight), loss, steps, norms, extra, new_r, deltas,
                       kept_weight, dropped)
