"""All sharpness metrics of a model at once, each metric compiled once and timed.

``make_sharpness_fn(model, options)`` returns ``fn(variables, images, labels,
key) -> dict`` for the analysis CLI and for periodic use during training. The
data are jit arguments (see ``objective``), so one compiled function serves
every checkpoint of a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import numpy as np

from fedjax_med.analysis import lanczos, objective, sharpness, trace


class SharpnessOptions(NamedTuple):
  """What :func:`make_sharpness_fn` computes (0 switches a metric off where noted)."""

  batch_size: int = 250  # examples per lax.map step of the loss
  lanczos_iters: int = 20  # Lanczos order for lambda_max / top-k (0: off)
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


def _metric(model: nn.Module, batch_size: int, fn) -> Callable:
  """jit of ``fn(loss_fn, params, key, images, labels, model_state)`` with data as arguments."""

  @jax.jit
  def run(params, model_state, images, labels, key):
    loss_fn = objective.eval_loss_fn(model, images, labels, batch_size, model_state=model_state)
    return fn(loss_fn, params, key, images, labels, model_state)

  return run


def make_sharpness_fn(model: nn.Module, options: SharpnessOptions = SharpnessOptions()):
  """Builds ``fn(variables, images, labels, key) -> dict`` of JSON-ready metrics.

  The dict has ``loss``, ``lambda_max``, ``top_eigenvalues``, ``trace``,
  ``trace_stderr``, ``eps_sharpness`` (Keskar's percentage) and
  ``eps_sharpness_abs``, ``m_sharpness`` (absolute, as in Foret et al.) and
  ``m_sharpness_rel``, optionally ``density`` (``grid``, ``density``), plus
  ``seconds`` per metric (the first call includes compilation) and ``num_params``.
  """
  o = options
  bs = o.batch_size
  metrics = {"loss": _metric(model, bs, lambda f, p, k, *_: f(p))}
  if o.lanczos_iters:
    metrics["lanczos"] = _metric(
        model, bs, lambda f, p, k, *_: lanczos.top_eigenvalues(f, p, k, o.lanczos_iters, o.top_k)
    )
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
                 labels[: nb * o.m].reshape(nb, o.m))
      loss = objective.batch_loss_fn(model, model_state)
      return sharpness.m_sharpness(loss, p, batches, o.rho, steps=o.m_steps)

    metrics["m_sharpness"] = _metric(model, bs, m_sharp)
  if o.density_order:

    def density(f, p, k, *_):
      quad = trace.slq(f, p, k, o.density_order, o.density_runs)
      return trace.density(quad, o.density_grid)

    metrics["density"] = _metric(model, bs, density)

  def fn(variables, images, labels, key) -> dict:
    params, model_state = objective.split_variables(variables)
    out, seconds = {}, {}
    for i, (name, metric) in enumerate(metrics.items()):
      if name == "m_sharpness" and len(labels) < o.m:
        continue
      t = time.perf_counter()
      value = jax.device_get(metric(params, model_state, images, labels, jax.random.fold_in(key, i)))
      seconds[name] = time.perf_counter() - t
      out.update(_to_json(name, value))
    out["num_params"] = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    out["seconds"] = seconds
    return out

  return fn


def _to_json(name: str, value) -> dict:
  if name == "loss":
    return {"loss": float(value)}
  if name == "lanczos":
    top = [float(v) for v in np.asarray(value)]
    return {"lambda_max": top[0], "top_eigenvalues": top}
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

