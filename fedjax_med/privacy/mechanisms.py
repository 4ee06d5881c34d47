"""The two primitives both privacy levels share: clip a pytree, add Gaussian noise to one.

Clipping is ``jax_privacy.clipping.clip_pytree`` (global L2 norm over every
leaf, NaN-safe, a traced clip norm allowed, so adaptive clipping compiles once).
Noise is independent N(0, std^2) in every entry, each leaf drawn from its own
key (``split(key, num_leaves)``), so the draw of one leaf never depends on the
shapes of the others.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax_privacy import clipping

from fedjax_med import types


def clip(tree: types.PyTree, clip_norm) -> tuple[types.PyTree, types.Array]:
  """``(tree * min(1, clip_norm / ||tree||), ||tree||)``: the global L2 norm is at most
  ``clip_norm`` (``inf``: unchanged). Non-finite entries count as 0."""
  return clipping.clip_pytree(tree, clip_norm, nan_safe=True)


def gaussian_noise(key: types.PRNGKey, like: types.PyTree, std) -> types.PyTree:
  """A pytree shaped like ``like`` of independent N(0, ``std``^2) entries (``std`` may be traced)."""
  leaves, treedef = jax.tree.flatten(like)
  keys = jax.random.split(key, max(1, len(leaves)))
  noise = [jax.random.normal(k, x.shape, x.dtype) * jnp.asarray(std, x.dtype)
           for k, x in zip(keys[: len(leaves)], leaves, strict=True)]
  return jax.tree.unflatten(treedef, noise)


def noise_std(noise_multiplier: float, clip_norm):
  """``noise_multiplier * clip_norm``, and 0 without noise also for an infinite clip norm."""
  return 0.0 if noise_multiplier == 0 else noise_multiplier * clip_norm
