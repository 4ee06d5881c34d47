"""Loss landscapes: 1D/2D slices along filter-normalized directions, and interpolation paths.

Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural
Nets", NeurIPS 2018: a random Gaussian direction ``d`` is rescaled filter by
filter, ``d_j <- d_j * ||w_j|| / ||d_j||``, so that a step of 1 changes every
filter by its own norm and plots of differently scaled networks compare. A
"filter" is the slice over the *last* axis of a kernel: output channel
``[kh, kw, cin, :]`` -> ``[..., j]`` of a conv kernel ``[kh, kw, cin, cout]``,
output neuron ``j`` of a Dense kernel ``[in, out]``. Vectors (biases,
normalization scales and offsets) get a zero direction, Li et al.'s "ignore"
option. Grid points are evaluated with ``lax.map`` (``points_per_batch`` of
them vmapped together), so memory is that of a few loss evaluations.

Linear interpolation ``theta(t) = (1 - t) theta_a + t theta_b`` (Goodfellow,
Vinyals & Saxe, ICLR 2015) between two solutions, or piecewise-linear through
a trajectory of checkpoints, shows barriers between them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.analysis import hvp as hvp_lib

_EPS = 1e-10


def filter_normalize(direction: types.Params, params: types.Params, ignore_1d: bool = True):
  """Rescales ``direction`` so each filter's norm equals the matching filter of ``params``.

  Args:
    direction: pytree like ``params``.
    params: the weights whose filter norms are copied.
    ignore_1d: zero the direction on leaves with ``ndim <= 1`` (biases,
      norm parameters); if False, normalize those as one filter each.

  Returns:
    The filter-normalized direction.
  """

  def one(d, w):
    if w.ndim <= 1:
      if ignore_1d:
        return jnp.zeros_like(d)
      return d * jnp.linalg.norm(w) / (jnp.linalg.norm(d) + _EPS)
    axes = tuple(range(w.ndim - 1))
    w_norm = jnp.sqrt(jnp.sum(w**2, axis=axes, keepdims=True))
    d_norm = jnp.sqrt(jnp.sum(d**2, axis=axes, keepdims=True))
    return d * w_norm / (d_norm + _EPS)

  return jax.tree.map(one, direction, params)


def filter_normalized_direction(
    key: types.PRNGKey, params: types.Params, ignore_1d: bool = True
) -> types.Params:
  """A Gaussian random direction, filter-normalized against ``params``."""
  return filter_normalize(optax.tree.random_like(key, params), params, ignore_1d)


def loss_line(
    loss_fn: hvp_lib.ScalarLossFn,
    params: types.Params,
    direction: types.Params,
    alphas: jax.Array,
    points_per_batch: int = 1,
) -> jax.Array:
  """``[len(alphas)]`` losses at ``params + alpha * direction``."""
  return jax.lax.map(
      lambda a: loss_fn(optax.tree.add_scale(params, a, direction)), alphas,
      batch_size=points_per_batch,
  )


def loss_surface(
    loss_fn: hvp_lib.ScalarLossFn,
    params: types.Params,
    d1: types.Params,
    d2: types.Params,
    alphas: jax.Array,
    betas: jax.Array,
    points_per_batch: int = 1,
) -> jax.Array:
  """``[len(alphas), len(betas)]`` losses at ``params + alpha * d1 + beta * d2``."""
  grid_a, grid_b = jnp.meshgrid(alphas, betas, indexing="ij")
  points = jnp.stack([grid_a.ravel(), grid_b.ravel()], axis=-1)  # [na * nb, 2]

  def at(ab):
    return loss_fn(optax.tree.add_scale(optax.tree.add_scale(params, ab[0], d1), ab[1], d2))

  return jax.lax.map(at, points, batch_size=points_per_batch).reshape(grid_a.shape)


def interpolate(params_a: types.Params, params_b: types.Params, t) -> types.Params:
  """``(1 - t) * params_a + t * params_b``."""
  return jax.tree.map(lambda a, b: (1.0 - t) * a + t * b, params_a, params_b)


def interpolation_losses(loss_fn: hvp_lib.ScalarLossFn, params_a: types.Params,
                         params_b: types.Params, ts: jax.Array, *,
                         points_per_batch: int = 1) -> jax.Array:
  """``[len(ts)]`` losses along the line through two models (``t`` outside [0, 1] extrapolates)."""
  return jax.lax.map(
      lambda t: loss_fn(interpolate(params_a, params_b, t)), ts, batch_size=points_per_batch
  )


def path_losses(
    loss_fn: hvp_lib.ScalarLossFn,
    checkpoints: types.Params,
    points_per_segment: int = 5,
    points_per_batch: int = 1,
) -> tuple[jax.Array, jax.Array]:
  """Losses along the piecewise-linear path through a trajectory of checkpoints.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``.
    checkpoints: params pytree with leaves stacked ``[K, ...]``, K >= 2, in order.
    points_per_segment: evaluations per segment (its start included; the last
      checkpoint is added at the end).
    points_per_batch: points vmapped together.

  Returns:
    ``(positions, losses)``, both ``[(K - 1) * points_per_segment + 1]``;
    position ``k`` is checkpoint ``k`` exactly.
  """
  k = jax.tree.leaves(checkpoints)[0].shape[0]
  if k < 2:
    raise ValueError(f"a path needs at least 2 checkpoints, got {k}")
  positions = jnp.arange((k - 1) * points_per_segment + 1) / points_per_segment

  def at(pos):
    i = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, k - 2)
    t = pos - i
    a = jax.tree.map(lambda x: x[i], checkpoints)
    b = jax.tree.map(lambda x: x[i + 1], checkpoints)
    return loss_fn(interpolate(a, b, t))

  return positions, jax.lax.map(at, positions, batch_size=points_per_batch)


def project_onto_plane(
    params: types.Params, origin: types.Params, d1: types.Params, d2: types.Params
) -> jax.Array:
  """``[2]`` least-squares coordinates of ``params - origin`` in the span of ``d1``, ``d2``.

  Use it to draw a trajectory on a :func:`loss_surface` contour plot (Li et
  al. §7 use PCA directions; any two directions work).
  """
  x = optax.tree.sub(params, origin)
  gram = jnp.array([
      [optax.tree.vdot(d1, d1), optax.tree.vdot(d1, d2)],
      [optax.tree.vdot(d2, d1), optax.tree.vdot(d2, d2)],
  ])
  rhs = jnp.array([optax.tree.vdot(d1, x), optax.tree.vdot(d2, x)])
  return jnp.linalg.lstsq(gram, rhs)[0]
