"""On-device data augmentation inside the loss (seeded by the step key).

Runs inside the jitted round, so it costs no host work and is vmapped over
clients like everything else. Applied to training batches only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ("none", "shift", "flip_shift")


def random_shift(rng: jax.Array, image: jax.Array, max_shift: int) -> jax.Array:
  """Translates each image [B, H, W, ch] (3D: [B, D, H, W, ch]) by up to ``max_shift`` px per
  spatial axis (edge padded)."""
  b, *spatial, ch = image.shape
  pads = ((0, 0), *((max_shift, max_shift),) * len(spatial), (0, 0))
  padded = jnp.pad(image, pads, mode="edge")
  offsets = jax.random.randint(rng, (b, len(spatial)), 0, 2 * max_shift + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (*off, 0), (*spatial, ch))

  return jax.vmap(crop)(padded, offsets)


def random_flip(rng: jax.Array, image: jax.Array) -> jax.Array:
  """Flips each image (or volume) left-right (its W axis) with probability 1/2.

  Left-right only, in 2D and 3D: the other axes of a scan (head-foot, front-back) are not
  symmetric in anatomy. Labels that name a side (OrganMNIST's left / right kidney, femur,
  lung) would be corrupted by it; ``config.validate`` refuses ``flip_shift`` for them.
  """
  flip = jax.random.bernoulli(rng, 0.5, (image.shape[0],) + (1,) * (image.ndim - 1))
  return jnp.where(flip, jnp.flip(image, axis=-2), image)


def sided_labels(labels) -> list[str]:
  """The class names that name a body side ("kidney-left"), which a left-right flip swaps."""
  return [name for name in labels if "left" in name or "right" in name]


def augment(kind: str, rng: jax.Array, image: jax.Array, max_shift: int = 2) -> jax.Array:
  """Applies the augmentation ``kind`` (one of ``KINDS``) to a batch [B, H, W, ch] or
  [B, D, H, W, ch] (shifts along every spatial axis, flips left-right)."""
  if kind == "none":
    return image
  if kind not in KINDS:
    raise ValueError(f"augmentation must be one of {KINDS}, got {kind!r}")
  k_shift, k_flip = jax.random.split(rng)
  image = random_shift(k_shift, image, max_shift)
  if kind == "flip_shift":
    image = random_flip(k_flip, image)
  return image
