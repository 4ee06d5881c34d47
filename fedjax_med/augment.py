"""On-device data augmentation inside the loss (seeded by the step key).

Runs inside the jitted round, so it costs no host work and is vmapped over
clients like everything else. Applied to training batches only.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ("none", "shift", "flip_shift")


def random_shift(rng: jax.Array, image: jax.Array, max_shift: int) -> jax.Array:
  """Translates each image [B, H, W, ch] by up to ``max_shift`` px (zero/edge padded)."""
  b, h, w, _ = image.shape
  padded = jnp.pad(image, ((0, 0), (max_shift, max_shift), (max_shift, max_shift), (0, 0)),
                   mode="edge")
  offsets = jax.random.randint(rng, (b, 2), 0, 2 * max_shift + 1)

  def crop(img, off):
    return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, img.shape[-1]))

  return jax.vmap(crop)(padded, offsets)


def random_flip(rng: jax.Array, image: jax.Array) -> jax.Array:
  """Flips each image left-right with probability 1/2."""
  flip = jax.random.bernoulli(rng, 0.5, (image.shape[0], 1, 1, 1))
  return jnp.where(flip, image[:, :, ::-1], image)


def augment(kind: str, rng: jax.Array, image: jax.Array, max_shift: int = 2) -> jax.Array:
  """Applies the augmentation ``kind`` (one of ``KINDS``) to a batch [B, H, W, ch]."""
  if kind == "none":
    return image
  if kind not in KINDS:
    raise ValueError(f"augmentation must be one of {KINDS}, got {kind!r}")
  k_shift, k_flip = jax.random.split(rng)
  image = random_shift(k_shift, image, max_shift)
  if kind == "flip_shift":
    image = random_flip(k_flip, image)
  return image
