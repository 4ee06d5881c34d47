"""Model-level reports: every sharpness metric at once, and a landscape scan of one or two runs.

These glue a flax model and an evaluation subset (``objective``) to the pure
tools (``lanczos``, ``trace``, ``sharpness``, ``landscape``, ``drift``), with
the data passed as jit arguments. ``make_sharpness_fn(model, options)`` returns
``fn(variables, images, labels, key) -> dict`` whose metrics are each compiled
once, so the same function serves the analysis CLI, every checkpoint of a run,
and periodic use during training. Each step is compiled ahead of its call
(logged as "compiling NAME..." with its time) and reported to an optional
``on_step(done, total, name)`` callback (``fedjax_med.progress.step_callback``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np
import optax

from fedjax_med import types
from fedjax_med.analysis import drift, lanczos, landscape, objective, sharpness, trace
from fedjax_med.progress import StepCallback

log = logging.getLogger(__name__)


class SharpnessOptions(NamedTuple):
  """What :func:`make_sharpness_fn` computes (0 switches a metric off where noted)."""

  batch_size: int = 250  # examples per lax.map step of the loss
  lanczos_iters: int = 20  # Lanczos order for lambda_max / top-k (0: off)
  lanczos_tol: float = 0.0  # > 0: stop once lambda_max changes by <= tol (relative) in a step
  top_k: int = 5
  probes: int = 100  # Hutchinson probes (0: off)
  probe_batch_size: int = 1
  eps: float = 1e-3  # Keskar epsilon (0: off)
  eps_norm: str = "linf"
  eps_steps: int = 10
  m: int = 128  # m-sharpness batch size (0: off)
  rho: float = 0.05
  m_steps: int = 1
  density_order: int = 0  # stochastic Lanczos quadrature order (0: off)
  density_runs: int = 3
  density_grid: int = 256


def _compiled(cache: dict, name: str, jitted, *args):
  """``jitted`` compiled for ``args`` (kept in ``cache`` per name and argument shapes):
  ``(executable, compile seconds or None when cached)``; the compile is logged."""
  key = (name, tuple((np.shape(x), str(getattr(x, "dtype", type(x).__name__)))
                    for x in jax.tree.leaves(args)))
  if key in cache:
    return cache[key], None
  log.info("compiling %s...", name)
  t = time.perf_counter()
  cache[key] = jitted.lower(*args).compile()
  seconds = time.perf_counter() - t
  log.info("compiled %s in %.1f s", name, seconds)
  return cache[key], seconds


def _no_steps(done: int, total: int, name: str) -> None:
  del done, total, name


def _metric(model: nn.Module, batch_size: int, fn) -> Callable:
  """jit of ``fn(loss_fn, params, key, images, labels, model_state)`` with data as arguments."""

  @jax.jit
  def run(params, model_state, images, labels, key):
    loss_fn = objective.eval_loss_fn(model, images, labels, batch_size, model_state=model_state)
    return fn(loss_fn, params, key, images, labels, model_state)

  return run


def make_sharpness_fn(model: nn.Module, options: SharpnessOptions = SharpnessOptions()):
  """Builds ``fn(variables, images, labels, key, on_step=None) -> dict`` of JSON-ready metrics.

  The dict has ``loss``, ``lambda_max``, ``top_eigenvalues``, ``lanczos_steps``, ``trace``,
  ``trace_stderr``, ``eps_sharpness`` (Keskar's percentage) and
  ``eps_sharpness_abs``, ``m_sharpness`` (absolute, as in Foret et al.) and
  ``m_sharpness_rel``, optionally ``density`` (``grid``, ``density``), plus
  ``seconds`` per metric (its run, without compilation), ``compile_seconds`` (of the
  metrics compiled by this call) and ``num_params``. ``on_step(done, total, name)`` is
  called before the first metric (``done=0``) and after each.
  """
  o = options
  bs = o.batch_size
  metrics = {"loss": _metric(model, bs, lambda f, p, k, *_: f(p))}
  if o.lanczos_iters:

    def top(f, p, k, *_):
      result, _ = lanczos.hessian_lanczos(f, p, k, o.lanczos_iters, o.lanczos_tol)
      return lanczos.ritz(result)[0][::-1][: o.top_k], result.num_steps

    metrics["lanczos"] = _metric(model, bs, top)
  if o.probes:
    metrics["trace"] = _metric(
        model, bs, lambda f, p, k, *_: trace.hutchinson(f, p, k, o.probes, o.probe_batch_size)[:2]
    )
  if o.eps:
    metrics["eps_sharpness"] = _metric(
        model, bs,
        lambda f, p, k, *_: sharpness.eps_sharpness(f, p, o.eps, norm=o.eps_norm, steps=o.eps_steps),
    )
  if o.m:

    def m_sharp(f, p, k, images, labels, model_state):
      nb = labels.shape[0] // o.m
      batches = (images[: nb * o.m].reshape(nb, o.m, *images.shape[1:]),
                 labels[: nb * o.m].reshape(nb, o.m, *labels.shape[1:]))
      loss = objective.batch_loss_fn(model, model_state)
      return sharpness.m_sharpness(loss, p, batches, o.rho, steps=o.m_steps)

    metrics["m_sharpness"] = _metric(model, bs, m_sharp)
  if o.density_order:

    def density(f, p, k, *_):
      quad = trace.slq(f, p, k, order=o.density_order, num_runs=o.density_runs)
      return trace.density(quad, o.density_grid)

    metrics["density"] = _metric(model, bs, density)

  cache = {}

  def fn(variables, images, labels, key, on_step: StepCallback | None = None) -> dict:
    on_step = on_step or _no_steps
    params, model_state = objective.split_variables(variables)
    out, seconds, compile_seconds = {}, {}, {}
    todo = [(i, name) for i, name in enumerate(metrics)
            if not (name == "m_sharpness" and len(labels) < o.m)]
    on_step(0, len(todo), "")
    for done, (i, name) in enumerate(todo, 1):
      args = (params, model_state, images, labels, jax.random.fold_in(key, i))
      compiled, compile_s = _compiled(cache, name, metrics[name], *args)
      if compile_s is not None:
        compile_seconds[name] = compile_s
      t = time.perf_counter()
      value = jax.device_get(compiled(*args))
      seconds[name] = time.perf_counter() - t
      out.update(_to_json(name, value))
      on_step(done, len(todo), name)
    out["num_params"] = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    out["seconds"] = seconds
    if compile_seconds:
      out["compile_seconds"] = compile_seconds
    return out

  return fn


def make_round_metrics_fn(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    options: SharpnessOptions = SharpnessOptions(),
    seed: int = 0,
) -> Callable[[dict, int], dict]:
  """``fn(variables, round_idx) -> dict`` for periodic logging during training.

  The subset is fixed; the probe key is ``fold_in(PRNGKey(seed), round_idx)``,
  so the record of a round is the same after a resume. Timings are left out
  for the same reason. ``variables`` may be sharded: they are gathered to the host first.
  """
  fn = make_sharpness_fn(model, options)
  key = jax.random.PRNGKey(seed)

  def compute(variables: dict, round_idx: int) -> dict:
    out = fn(jax.device_get(variables), images, labels, jax.random.fold_in(key, round_idx))
    out.pop("seconds")
    out.pop("compile_seconds", None)
    return out

  return compute

def _to_json(name: str, value) -> dict:
  if name == "loss":
    return {"loss": float(value)}
  if name == "lanczos":
    top = [float(v) for v in np.asarray(value[0]) if np.isfinite(v)]
    return {"lambda_max": top[0], "top_eigenvalues": top, "lanczos_steps": int(value[1])}
  if name == "trace":
    return {"trace": float(value[0]), "trace_stderr": float(value[1])}
  if name == "eps_sharpness":
    return {"eps_sharpness": float(value.relative), "eps_sharpness_abs": float(value.absolute)}
  if name == "m_sharpness":
    return {"m_sharpness": float(value.absolute), "m_sharpness_rel": float(value.relative)}
  if name == "density":
    grid, dens = value
    return {"density": {"grid": np.asarray(grid).tolist(), "density": np.asarray(dens).tolist()}}
  raise ValueError(name)



def grid_points(num: int, span: float) -> np.ndarray:
  """``num`` evenly spaced points in [-span, span]; the middle one is exactly 0 for odd ``num``."""
  if num < 2:
    return np.zeros((1,), np.float32)
  half = (num - 1) / 2
  return ((np.arange(num) - half) / half * span).astype(np.float32)


def interpolation_points(num: int, margin: float) -> np.ndarray:
  """``t`` from 0 to 1 in ``num`` steps (endpoints exact), extended by ``margin`` on each side."""
  step = 1.0 / max(num - 1, 1)
  extra = int(round(margin / step))
  return (np.arange(-extra, num + extra) * step).astype(np.float32)


def _variables_loss(model, images, labels, batch_size):
  """Loss of a full variables dict (model state included: interpolation moves BN statistics too)."""

  def loss(variables):
    params, state = objective.split_variables(variables)
    return objective.eval_loss_fn(model, images, labels, batch_size, model_state=state)(params)

  return loss


def landscape_report(
    model: nn.Module,
    variables: dict,
    images: np.ndarray,
    labels: np.ndarray,
    key: types.PRNGKey,
    *,
    other: dict | None = None,
    trajectory: dict | None = None,
    grid: int = 21,
    span: float = 1.0,
    surface: bool = True,
    interp_points: int = 21,
    interp_margin: float = 0.25,
    batch_size: int = 250,
    points_per_batch: int = 1,
    on_step: StepCallback | None = None,
) -> dict:
  """Loss along filter-normalized directions of ``variables``, and paths to other models.

  Args:
    model: the flax module.
    variables: model A's variables (the origin of the slices).
    images: ``[N, H, W, ch]`` evaluation subset.
    labels: ``[N]`` (multi-label: ``[N, L]``).
    key: PRNG key of the two random directions.
    other: model B's variables: adds the interpolation A -> B and their distance.
    trajectory: variables with leaves stacked ``[K, ...]`` (checkpoints in
      order, K >= 2): adds the loss along the piecewise-linear path.
    grid: points per axis of the 1D curves and the 2D surface.
    span: the slices cover ``[-span, span]`` filter-normalized units.
    surface: also compute the ``grid x grid`` surface.
    interp_points: points from A (t = 0) to B (t = 1).
    interp_margin: extrapolation beyond both ends, in units of t.
    batch_size: examples per ``lax.map`` step of the loss.
    points_per_batch: grid points vmapped together.
    on_step: ``on_step(done, total, name)``, called before the first step (``done=0``)
      and after each: the loss at A, the two lines, each row of the surface, the interpolation and the
      trajectory. The lines and rows share one compiled function.

  Returns:
    A JSON-ready dict (``loss``, ``alphas``, ``line_1``, ``line_2``, maybe
    ``surface``, ``interpolation``, ``distance``, ``trajectory``, ``seconds``).
  """
  params, model_state = objective.split_variables(variables)
  k1, k2 = jax.random.split(key)
  alphas = grid_points(grid, span)
  ppb = points_per_batch
  on_step = on_step or _no_steps
  cache = {}

  @jax.jit
  def directions(params):
    return (landscape.filter_normalized_direction(k1, params),
            landscape.filter_normalized_direction(k2, params))

  @jax.jit
  def loss_at(params, model_state, images, labels):
    return objective.eval_loss_fn(model, images, labels, batch_size, model_state=model_state)(
        params)

  @jax.jit
  def line(params, model_state, images, labels, shift_dir, shift, direction):
    """Losses at ``params + shift * shift_dir + alpha * direction`` for every alpha."""
    loss_fn = objective.eval_loss_fn(model, images, labels, batch_size, model_state=model_state)
    origin = optax.tree.add_scale(params, shift, shift_dir)
    return landscape.loss_line(loss_fn, origin, direction, alphas, ppb)

  @jax.jit
  def interpolate(a, b, images, labels):
    loss = _variables_loss(model, images, labels, batch_size)
    ts = interpolation_points(interp_points, interp_margin)
    return landscape.interpolation_losses(loss, a, b, ts, points_per_batch=ppb)

  @jax.jit
  def path(stacked, images, labels):
    loss = _variables_loss(model, images, labels, batch_size)
    return landscape.path_losses(loss, stacked, points_per_segment=5, points_per_batch=ppb)

  # Steps: the loss at A, the two lines and each row of the surface (one compiled function
  # for lines and rows), then the paths.
  total = 3 + (len(alphas) if surface else 0) + (other is not None) + (trajectory is not None)
  done = 0
  seconds = {}

  def run(name, label, jitted, *args):
    nonlocal done
    compiled, _ = _compiled(cache, name, jitted, *args)
    t = time.perf_counter()
    value = jax.device_get(compiled(*args))
    seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t
    done += 1
    on_step(done, total, label)
    return value

  on_step(0, total, "")
  d1, d2 = directions(params)
  data = (params, model_state, images, labels)
  zero = np.float32(0.0)
  result = {"loss": run("loss", "slices", loss_at, *data),
            "line_1": run("loss line", "slices", line, *data, d2, zero, d1),
            "line_2": run("loss line", "slices", line, *data, d1, zero, d2)}
  if surface:  # row i: params + alpha_i * d1 + beta * d2 for every beta
    result["surface"] = [run("loss line", "slices", line, *data, d1, a, d2) for a in alphas]
  result = {k: np.asarray(v).tolist() for k, v in result.items()}
  result["alphas"] = alphas.tolist()
  if other is not None:
    losses = run("interpolation", "interpolation", interpolate, variables, other, images, labels)
    ts = interpolation_points(interp_points, interp_margin)
    result["interpolation"] = {"t": ts.tolist(), "loss": np.asarray(losses).tolist()}
    dist = jax.device_get(drift.solution_distance(params, other["params"]))
    result["distance"] = {k: float(v) for k, v in dist.items()}
  if trajectory is not None:
    positions, losses = run("trajectory", "trajectory", path, trajectory, images, labels)
    result["trajectory"] = {"position": np.asarray(positions).tolist(),
                            "loss": np.asarray(losses).tolist()}
  result["seconds"] = seconds
  return result
