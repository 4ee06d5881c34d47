"""Classification objectives: a flax model -> ``loss_fn`` and ``predict_fn``.

The round API only needs ``loss_fn(params, batch, rng) -> (loss, aux)``; this
module builds it for image classification: masked softmax cross-entropy over
``[B]`` class ids (binary, multi-class and ordinal tasks), or, for a
multi-label task (ChestMNIST: ``[B, L]`` labels in {0, 1}), the mean over the L
labels of the sigmoid binary cross-entropy of each label's logit, as MedMNIST
trains it (``BCEWithLogitsLoss``).
``params`` is the model's full variables dict (``{"params": ..., maybe
"batch_stats": ...}``); BatchNorm statistics come back in ``aux["variables"]``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from fedjax_med import augment as augment_lib
from fedjax_med import types


def preprocess(image: jax.Array) -> jax.Array:
  """uint8 [0, 255] images -> float32 in [-1, 1]; float images pass through."""
  if image.dtype == jnp.uint8:
    return image.astype(jnp.float32) * (2.0 / 255.0) - 1.0
  return image.astype(jnp.float32)


def init_variables(model: nn.Module, rng: types.PRNGKey, image_shape) -> dict:
  """Initializes ``model`` on one dummy image of shape ``image_shape`` (H, W, ch)."""
  x = jnp.zeros((1, *image_shape), jnp.float32)
  variables = model.init({"params": rng, "dropout": rng}, x, train=False)
  return jax.tree.map(lambda v: v.astype(jnp.float32), dict(variables))


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values`` over ``mask``; 0 (not NaN) when the mask is empty."""
  m = mask.astype(values.dtype)
  return jnp.sum(values * m) / jnp.maximum(jnp.sum(m), 1.0)


def _check_label_rank(logits: jax.Array, labels: jax.Array, multi_label: bool) -> None:
  """Trace-time check: ``[B]`` class ids, or ``[B, L]`` multi-hot labels with L = logits' K."""
  if multi_label and labels.shape != logits.shape:
    raise ValueError(f"multi-label labels must be [B, L] like the logits {logits.shape}, got "
                     f"{labels.shape}; single-label data needs multi_label=False")
  if not multi_label and labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels must be [B] class ids for logits {logits.shape}, got "
                     f"{labels.shape}; [B, L] multi-hot labels need multi_label=True")


def example_loss(logits: jax.Array, labels: jax.Array, multi_label: bool = False) -> jax.Array:
  """[B] loss of each example: softmax cross-entropy, or the mean sigmoid BCE over the labels.

  Args:
    logits: [B, K] float.
    labels: [B] int class ids, or (``multi_label``) [B, K] labels in {0, 1}.
    multi_label: one independent binary label per output (sigmoid, not softmax).
  """
  _check_label_rank(logits, labels, multi_label)
  if multi_label:
    bce = optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
    return jnp.mean(bce, axis=-1)
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def example_accuracy(logits: jax.Array, labels: jax.Array, multi_label: bool = False) -> jax.Array:
  """[B] float32 accuracy of each example: argmax hit, or the fraction of its labels right.

  Multi-label: label ``l`` is predicted positive when ``sigmoid(logit) > 0.5``
  (``logit > 0``); averaged over examples this is MedMNIST's multi-label ACC,
  the per-label accuracy at threshold 0.5 averaged over the labels.
  """
  _check_label_rank(logits, labels, multi_label)
  if multi_label:
    return jnp.mean(((logits > 0) == (labels > 0)).astype(jnp.float32), axis=-1)
  return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def make_loss_fn(model: nn.Module, augment: str = "none", multi_label: bool = False
                 ) -> types.LossFn:
  """Masked mean loss of ``model`` (train mode): softmax cross-entropy, or sigmoid BCE.

  ``aux["accuracy"]`` is the masked mean of :func:`example_accuracy`.

  Args:
    model: a flax module called as ``model(x, train=..., mask=...)``.
    augment: on-device augmentation of each training batch (``augment.KINDS``),
      drawn from the step key.
    multi_label: labels are ``[B, L]`` in {0, 1} (``Dataset.multi_label``, ChestMNIST):
      the loss of an example is the mean over its L labels of the sigmoid
      binary cross-entropy (:func:`example_loss`); else ``[B]`` class ids and
      softmax cross-entropy.
  """
  if augment not in augment_lib.KINDS:
    raise ValueError(f"augment must be one of {augment_lib.KINDS}, got {augment!r}")

  def loss_fn(params, batch, rng):
    x = preprocess(batch["image"])
    if augment != "none":
      rng, aug_rng = jax.random.split(rng)
      x = augment_lib.augment(augment, aug_rng, x)
    mutable = [k for k in params if k != "params"]
    logits, new_vars = model.apply(
        params, x, train=True, mask=batch["mask"], mutable=mutable, rngs={"dropout": rng}
    )
    loss = masked_mean(example_loss(logits, batch["label"], multi_label), batch["mask"])
    acc = masked_mean(example_accuracy(logits, batch["label"], multi_label), batch["mask"])
    aux = {"accuracy": acc}
    if new_vars:
      aux["variables"] = dict(new_vars)
    return loss, aux

  return loss_fn


def make_predict_fn(model: nn.Module):
  """``predict(params, image [N, H, W, ch]) -> logits [N, K]`` in eval mode.

  The logits of a multi-label model are one per label (probabilities: sigmoid).
  """

  def predict(params, image):
    return model.apply(params, preprocess(image), train=False)

  return predict
