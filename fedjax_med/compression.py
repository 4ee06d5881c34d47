"""Compression of client updates, applied inside the one-jit round.

A :class:`Compressor` is a pair of pure functions in the spirit of optax:
``encode(x, key) -> payload`` and ``decode(payload, shape) -> x_hat`` on one
array, plus ``payload_bits(shape)``: the exact number of bits the payload
takes on the wire (values, indices, scales). ``compress_tree`` applies it leaf
by leaf with error feedback (Seide et al. 2014; Karimireddy et al. 2019): the
client adds its residual memory to its update, sends the compressed result,
and keeps what was not sent.

- ``quantize(bits)``: stochastic uniform quantization to ``2**bits`` levels
  over ``[-m, m]`` (m = max |x| per tensor or per block of ``block`` values);
  unbiased: E[decode(encode(x))] = x (Alistarh et al. 2017, QSGD-style).
- ``topk(fraction)``: the ``k = ceil(fraction * n)`` largest-magnitude entries
  per tensor, as (float32 value, int32 index) pairs.
- ``randk(fraction)``: ``k`` entries at random positions drawn from a key shared
  with the server (so indices are not sent); scaled by ``n / k`` when
  ``unbiased`` (use unscaled with error feedback).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types


class Compressor(NamedTuple):
  encode: Callable[[jax.Array, jax.Array], Any]  # (x [n] float32, key) -> payload
  decode: Callable[[Any, int], jax.Array]  # (payload, n) -> x_hat [n]
  payload_bits: Callable[[int], int]  # n -> bits on the wire for one tensor of n values


def _k_of(n: int, fraction: float) -> int:
  return max(1, min(n, math.ceil(fraction * n)))


def identity() -> Compressor:
  return Compressor(lambda x, key: x, lambda p, n: p, lambda n: 32 * n)


def quantize(bits: int, block: int | None = None) -> Compressor:
  """Stochastic uniform quantization to ``bits`` bits, one float32 scale per block."""
  if bits not in (1, 2, 4, 8):
    raise ValueError(f"quantize bits must be 1, 2, 4 or 8, got {bits}")
  levels = 2**bits - 1

  def blocks(x):
    n = x.shape[0]
    size = n if not block else block
    pad = -n % size
    return jnp.pad(x, (0, pad)).reshape(-1, size)

  def encode(x, key):
    xb = blocks(x)
    m = jnp.max(jnp.abs(xb), axis=1, keepdims=True)
    scaled = jnp.where(m > 0, (xb + m) / jnp.where(m > 0, 2 * m, 1.0) * levels, 0.0)
    q = jnp.floor(scaled + jax.random.uniform(key, xb.shape))
    return jnp.clip(q, 0, levels).astype(jnp.uint8), m

  def decode(payload, n):
    q, m = payload
    x = q.astype(jnp.float32) / levels * 2 * m - m
    return x.reshape(-1)[:n]

  def payload_bits(n):
    num_blocks = 1 if not block else -(-n // block)
    return n * bits + 32 * num_blocks

  return Compressor(encode, decode, payload_bits)


def topk(fraction: float) -> Compressor:
  """The ``ceil(fraction * n)`` largest-|x| entries, sent as (value, index) pairs."""
  if not 0 < fraction <= 1:
    raise ValueError(f"topk fraction must be in (0, 1], got {fraction}")

  def encode(x, key):
    del key
    _, idx = jax.lax.top_k(jnp.abs(x), _k_of(x.shape[0], fraction))
    return x[idx], idx.astype(jnp.int32)

  def decode(payload, n):
    values, idx = payload
    return jnp.zeros((n,), values.dtype).at[idx].set(values)

  return Compressor(encode, decode, lambda n: 64 * _k_of(n, fraction))


def randk(fraction: float, unbiased: bool = True) -> Compressor:
  """``k`` entries at shared-random positions (values only on the wire, plus a 64-bit seed)."""
  if not 0 < fraction <= 1:
    raise ValueError(f"randk fraction must be in (0, 1], got {fraction}")

  def positions(key, n):
    return jax.random.choice(key, n, (_k_of(n, fraction),), replace=False)

  def encode(x, key):
    n = x.shape[0]
    idx = positions(key, n)
    scale = n / idx.shape[0] if unbiased else 1.0
    return x[idx] * scale, key

  def decode(payload, n):
    values, key = payload
    return jnp.zeros((n,), values.dtype).at[positions(key, n)].set(values)

  return Compressor(encode, decode, lambda n: 32 * _k_of(n, fraction) + 64)


# name -> (bits, block, fraction, error_feedback) -> Compressor | None. Rand-k is
# unscaled under error feedback (the residual keeps what was not sent).
COMPRESSORS: dict[str, Callable[..., Compressor | None]] = {
    "none": lambda bits, block, fraction, error_feedback: None,
    "quantize": lambda bits, block, fraction, error_feedback: quantize(bits, block or None),
    "topk": lambda bits, block, fraction, error_feedback: topk(fraction),
    "randk": lambda bits, block, fraction, error_feedback: randk(fraction, not error_feedback),
}
KINDS = tuple(COMPRESSORS)


def make(
  kind: str, *, bits: int = 8, fraction: float = 0.01, block: int = 0, error_feedback: bool = False
) -> Compressor | None:
  """The compressor named ``kind`` (``None`` for ``"none"``)."""
  if kind not in COMPRESSORS:
    raise ValueError(f"compressor must be one of {KINDS}, got {kind!r}")
  return COMPRESSORS[kind](bits, block, fraction, error_feedback)


def encode_tree(
  compressor: Compressor, tree: types.PyTree, key: jax.Array, residual: types.PyTree | None
) -> tuple[list, types.PyTree, types.PyTree | None]:
  """``(payloads, sent, new_residual)``: every leaf's payload as it travels, what the
  server decodes from them (shaped like ``tree``), and the new residual.

  With ``residual`` (error feedback) the client sends ``C(tree + residual)`` and
  keeps ``tree + residual - sent``; without, it sends ``C(tree)`` (residual ``None``).
  """
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  res_leaves = jax.tree.leaves(residual) if residual is not None else [None] * len(leaves)
  payloads, sent, new_res = [], [], []
  for leaf, k, r in zip(leaves, keys, res_leaves, strict=True):
    x = leaf.reshape(-1).astype(jnp.float32)
    if r is not None:
      x = x + r.reshape(-1)
    payload = compressor.encode(x, k)
    x_hat = compressor.decode(payload, x.shape[0])
    payloads.append(payload)
    sent.append(x_hat.reshape(leaf.shape).astype(leaf.dtype))
    new_res.append((x - x_hat).reshape(leaf.shape))
  sent = jax.tree.unflatten(treedef, sent)
  return payloads, sent, (jax.tree.unflatten(treedef, new_res) if residual is not None else None)


def compress_tree(
  compressor: Compressor, tree: types.PyTree, key: jax.Array, residual: types.PyTree | None
) -> tuple[types.PyTree, types.PyTree | None]:
  """What the server receives for ``tree`` (decoded), and the new residual
  (:func:`encode_tree` without the payloads)."""
  _, sent, new_residual = encode_tree(compressor, tree, key, residual)
  return sent, new_residual


def decode_tree(compressor: Compressor, payloads: list, like: types.PyTree) -> types.PyTree:
  """The tree that :func:`encode_tree`'s ``payloads`` stand for, shaped like ``like``."""
  leaves, treedef = jax.tree.flatten(like)
  out = [compressor.decode(p, math.prod(x.shape)).reshape(x.shape).astype(x.dtype)
         for p, x in zip(payloads, leaves, strict=True)]
  return jax.tree.unflatten(treedef, out)


def upload_bits(compressor: Compressor | None, params: types.PyTree) -> int:
  """Exact bits one client uploads for an update shaped like ``params``."""
  sizes = [math.prod(x.shape) for x in jax.tree.leaves(params)]
  if compressor is None:
    return sum(32 * n for n in sizes)
  return sum(compressor.payload_bits(n) for n in sizes)


def model_bits(params: types.PyTree) -> int:
  """Bits of the model as sent server -> client (each leaf at its dtype)."""
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize * 8 for x in jax.tree.leaves(params))
