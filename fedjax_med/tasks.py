"""Classification objectives: a flax model -> ``loss_fn`` and ``predict_fn``.

The round API only needs ``loss_fn(params, batch, rng) -> (loss, aux)``; this
module builds it for image classification with masked softmax cross-entropy.
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


def make_loss_fn(model: nn.Module, augment: str = "none") -> types.LossFn:
  """Masked mean softmax cross-entropy of ``model`` (train mode).

  Args:
    model: a flax module called as ``model(x, train=..., mask=...)``.
    augment: on-device augmentation of each training batch (``augment.KINDS``),
      drawn from the step key.
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
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    loss = masked_mean(ce, batch["mask"])
    acc = masked_mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32), batch["mask"])
    aux = {"accuracy": acc}
    if new_vars:
      aux["variables"] = dict(new_vars)
    return loss, aux

  return loss_fn


def make_predict_fn(model: nn.Module):
  """``predict(params, image [N, H, W, ch]) -> logits [N, K]`` in eval mode."""

  def predict(params, image):
    return model.apply(params, preprocess(image), train=False)

  return predict
