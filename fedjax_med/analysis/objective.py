"""The analysed objective: mean cross-entropy of a flax model in eval mode on fixed data.

The loss is the training loss's (``tasks.example_loss``): softmax
cross-entropy for ``[N]`` class ids, the mean sigmoid binary cross-entropy over
the labels for ``[N, L]`` multi-label labels (ChestMNIST); the labels' rank
says which.

Sharpness and landscapes are properties of one function of the trainable
``params``; everything else is held fixed: the data (a seeded subset, chosen
by the caller), BatchNorm statistics (eval mode uses the running averages,
passed as ``model_state``) and dropout (off). The subset is processed in
fixed-size batches under ``lax.map`` with each batch rematerialized
(``jax.checkpoint``), so the gradient and HVP memory is that of one batch, not
of the whole subset. Call these inside ``jax.jit`` with the images as
arguments, not closed over: closed-over arrays become constants in the HLO.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_med import tasks, types


def split_variables(variables: dict) -> tuple[types.Params, dict]:
  """``{"params": p, **rest}`` -> ``(p, rest)``: trainable params and fixed model state."""
  rest = {k: v for k, v in variables.items() if k != "params"}
  return variables["params"], rest


def _ce_sum(model: nn.Module, params, model_state, images, labels, mask) -> jax.Array:
  logits = tasks.make_predict_fn(model)({"params": params, **model_state}, images)
  ce = tasks.example_loss(logits.astype(jnp.float32), labels, multi_label=labels.ndim == 2)
  return jnp.sum(jnp.where(mask, ce, 0.0))


def batch_loss_fn(
    model: nn.Module, model_state: dict | None = None
) -> Callable[[types.Params, tuple[jax.Array, jax.Array]], jax.Array]:
  """``loss(params, (images [B, H, W, ch], labels [B] or [B, L])) -> mean CE``, eval mode
  (m-sharpness)."""
  state = model_state or {}

  def loss(params, batch):
    images, labels = batch
    mask = jnp.ones(labels.shape[:1], bool)
    return _ce_sum(model, params, state, images, labels, mask) / labels.shape[0]

  return loss


def eval_loss_fn(
    model: nn.Module,
    images: jax.Array,
    labels: jax.Array,
    batch_size: int,
    *,
    model_state: dict | None = None,
    remat: bool = True,
) -> Callable[[types.Params], jax.Array]:
  """``loss_fn(params) -> mean CE`` over ``images``/``labels`` in eval mode.

  Args:
    model: flax module called as ``model(x, train=False)``.
    images: ``[N, H, W, ch]`` uint8 or float images (``tasks.preprocess`` applies).
    labels: ``[N]`` int labels, or ``[N, L]`` multi-label labels in {0, 1}.
    batch_size: examples per ``lax.map`` step (the last batch is padded and masked).
    model_state: non-trainable collections, e.g. ``{"batch_stats": ...}``.
    remat: rematerialize each batch in the backward pass (memory of one batch).

  Returns:
    A scalar float32 function of the ``params`` collection.
  """
  state = model_state or {}
  n = labels.shape[0]
  bs = max(1, min(batch_size, n))
  num_batches = -(-n // bs)
  pad = num_batches * bs - n
  images = jnp.pad(images, [(0, pad)] + [(0, 0)] * (images.ndim - 1))
  labels = jnp.pad(labels, [(0, pad)] + [(0, 0)] * (labels.ndim - 1))
  mask = jnp.arange(num_batches * bs) < n
  batches = jax.tree.map(
      lambda x: x.reshape(num_batches, bs, *x.shape[1:]), (images, labels, mask)
  )  # [num_batches, bs, ...]

  def batch_sum(params, batch):
    return _ce_sum(model, params, state, *batch)

  if remat:
    batch_sum = jax.checkpoint(batch_sum, prevent_cse=False)

  def loss_fn(params):
    return jnp.sum(jax.lax.map(lambda b: batch_sum(params, b), batches)) / n

  return loss_fn
