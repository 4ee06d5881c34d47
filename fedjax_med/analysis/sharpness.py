"""Sharpness as a worst-case loss increase: Keskar's epsilon-sharpness and SAM's m-sharpness.

**epsilon-sharpness** (Keskar et al., "On Large-Batch Training for Deep
Learning: Generalization Gap and Sharp Minima", ICLR 2017, metric 3): the
largest loss increase within the box ``|delta_i| <= eps (|w_i| + 1)``
(``norm="linf"``) or the ball ``||delta / (|w| + 1)||_2 <= eps``
(``norm="l2"``), reported relative as ``100 * increase / (1 + loss)``. Keskar
et al. maximize with L-BFGS-B; here a few steps of projected gradient ascent in
the rescaled variable ``u = delta / (|w| + 1)`` (sign steps for the box,
normalized-gradient steps for the ball), keeping the best iterate.

**m-sharpness** (Foret et al., "Sharpness-Aware Minimization", ICLR 2021, §4;
Andriushchenko & Flammarion, ICML 2022): the same worst case in a plain
rho-ball, taken separately on each batch of m examples and averaged; one
ascent step is SAM's own perturbation ``rho * g / ||g||``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.analysis import hvp as hvp_lib

NORMS = ("linf", "l2")


class Sharpness(NamedTuple):
  absolute: jax.Array  # [] max_loss - base_loss
  relative: jax.Array  # [] 100 * absolute / (1 + base_loss)  (Keskar et al.)
  base_loss: jax.Array  # []
  max_loss: jax.Array  # []


def worst_case_perturbation(
    loss_fn: hvp_lib.ScalarLossFn,
    params: types.Params,
    radius: float,
    *,
    norm: str = "linf",
    scale: types.Params | None = None,
    steps: int = 10,
    step_size: float | None = None,
    key: types.PRNGKey | None = None,
) -> tuple[jax.Array, types.Params]:
  """Projected gradient ascent for ``max loss_fn(params + scale * u)`` over ``||u|| <= radius``.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``.
    params: the centre.
    radius: size of the constraint set on ``u``.
    norm: ``"linf"`` (box; sign steps, then clipping) or ``"l2"`` (ball;
      normalized-gradient steps, then rescaling onto the ball).
    scale: per-coordinate scale of the perturbation (pytree like params);
      ``None`` = 1.
    steps: ascent steps (``lax.fori_loop``).
    step_size: step as a fraction of ``radius``; default ``2 / steps`` (one
      step reaches the boundary: for ``norm="l2"`` that is SAM's perturbation).
    key: if given, start at a uniform random point of the box (for
      ``"linf"``) or of the ball's bounding box shrunk onto it (``"l2"``),
      which escapes exact critical points; default: start at ``u = 0``.

  Returns:
    ``(max_loss, delta)``: the largest loss seen over the iterates and the
    perturbation ``delta = scale * u`` that reached it.
  """
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
  scale = jax.tree.map(jnp.ones_like, params) if scale is None else scale
  alpha = radius * (2.0 / steps if step_size is None else step_size)

  def project(u):
    if norm == "linf":
      return jax.tree.map(lambda x: jnp.clip(x, -radius, radius), u)
    return optax.tree.scale(jnp.minimum(1.0, radius / jnp.maximum(optax.tree.norm(u), 1e-30)), u)

  def value_and_grad_u(u):
    value, g = jax.value_and_grad(loss_fn)(optax.tree.add(params, optax.tree.mul(scale, u)))
    return value, optax.tree.mul(scale, g)

  if key is None:
    u0 = optax.tree.zeros_like(params)
  else:
    u0 = project(optax.tree.random_like(
        key, params, lambda k, s, d: jax.random.uniform(k, s, d, -radius, radius)))

  def body(_, carry):
    u, best_loss, best_u = carry
    value, g = value_and_grad_u(u)
    better = value > best_loss
    best_loss = jnp.where(better, value, best_loss)
    best_u = jax.tree.map(lambda b, x: jnp.where(better, x, b), best_u, u)
    if norm == "linf":
      step = jax.tree.map(jnp.sign, g)
    else:
      step = optax.tree.scale(1.0 / jnp.maximum(optax.tree.norm(g), 1e-30), g)
    return project(optax.tree.add_scale(u, alpha, step)), best_loss, best_u

  init = (u0, jnp.asarray(-jnp.inf, jnp.float32), u0)
  u, best_loss, best_u = jax.lax.fori_loop(0, steps, body, init)
  last = loss_fn(optax.tree.add(params, optax.tree.mul(scale, u)))
  better = last > best_loss
  best_u = jax.tree.map(lambda b, x: jnp.where(better, x, b), best_u, u)
  return jnp.maximum(last, best_loss), optax.tree.mul(scale, best_u)


def _result(base, worst) -> Sharpness:
  absolute = worst - base
  return Sharpness(absolute, 100.0 * absolute / (1.0 + base), base, worst)


def eps_sharpness(
    loss_fn: hvp_lib.ScalarLossFn,
    params: types.Params,
    eps: float = 1e-3,
    *,
    norm: str = "linf",
    steps: int = 10,
    step_size: float | None = None,
    key: types.PRNGKey | None = None,
) -> Sharpness:
  """Keskar et al.'s epsilon-sharpness: worst case within ``eps * (|w| + 1)``.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``.
    params: the solution.
    eps: box half-width (ball radius for ``"l2"``) relative to ``|w| + 1``;
      Keskar et al. report 1e-3 and 5e-4.
    norm: ``"linf"`` (Keskar's box) or ``"l2"``.
    steps: projected ascent steps.
    step_size: see :func:`worst_case_perturbation`.
    key: optional random start.

  Returns:
    :class:`Sharpness` (``relative`` is Keskar's percentage).
  """
  scale = jax.tree.map(lambda w: jnp.abs(w) + 1.0, params)
  worst, _ = worst_case_perturbation(loss_fn, params, eps, norm=norm, scale=scale, steps=steps,
                                     step_size=step_size, key=key)
  return _result(loss_fn(params), worst)


def m_sharpness(
    batch_loss_fn: Callable[[types.Params, types.PyTree], jax.Array],
    params: types.Params,
    batches: types.PyTree,
    rho: float = 0.05,
    *,
    steps: int = 1,
    norm: str = "l2",
    adaptive: bool = False,
) -> Sharpness:
  """SAM's m-sharpness: mean over batches of the worst case in a rho-ball.

  Args:
    batch_loss_fn: ``batch_loss_fn(params, batch) -> scalar`` mean loss of one batch.
    params: the solution.
    batches: pytree whose leaves have a leading axis of batches, each of m
      examples (``[num_batches, m, ...]``); mapped with ``lax.map``.
    rho: radius.
    steps: ascent steps per batch (1 = SAM's perturbation).
    norm: ``"l2"`` (SAM) or ``"linf"``.
    adaptive: scale by ``|w|`` as ASAM (Kwon et al., ICML 2021) instead of 1.

  Returns:
    :class:`Sharpness` with batch means of the base and worst-case losses.
  """
  scale = jax.tree.map(jnp.abs, params) if adaptive else None

  def one(batch):
    loss = lambda p: batch_loss_fn(p, batch)  # noqa: E731
    worst, _ = worst_case_perturbation(loss, params, rho, norm=norm, scale=scale, steps=steps)
    return loss(params), worst

  base, worst = jax.lax.map(one, batches)
  return _result(jnp.mean(base), jnp.mean(worst))
