"""PNG plots of analysis results (matplotlib, Agg backend; optional dependency).

matplotlib comes with the ``analysis`` extra (``pip install -e '.[analysis]'``).
Without it :func:`available` is False and the CLIs write their JSON and skip the
plots with :data:`MISSING_MESSAGE`. Each function writes one file and closes its figure.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence

import numpy as np

MISSING_MESSAGE = (
    "matplotlib is not installed, so no PNG plots were written (the JSON results were); "
    "install it with: pip install 'fedjax_med[analysis]'  (or: pip install matplotlib)"
)


def available() -> bool:
  """Whether matplotlib can be imported."""
  try:
    return importlib.util.find_spec("matplotlib") is not None
  except (ImportError, ValueError):
    return False


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(plt, fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def curves(
    path: str,
    lines: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    xlabel: str,
    ylabel: str = "loss",
    title: str = "",
    marks: Sequence[float] = (),
    tick_labels: Sequence[str] = (),
) -> str:
  """One axis with a labelled curve per ``name -> (x, y)``.

  ``marks``: x positions of vertical dotted lines, labelled ``tick_labels`` if given.
  """
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  for name, (x, y) in lines.items():
    ax.plot(x, y, label=name)
  for m in marks:
    ax.axvline(m, color="gray", linestyle=":", linewidth=0.8)
  if tick_labels:
    ax.set_xticks(list(marks), list(tick_labels))
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  if len(lines) > 1:
    ax.legend()
  return _save(plt, fig, path)


def contour(
    path: str,
    alphas: Sequence[float],
    betas: Sequence[float],
    surface: np.ndarray,
    title: str = "",
    levels: int = 30,
) -> str:
  """Contour plot of ``surface[len(alphas), len(betas)]`` (log-spaced levels for positive losses)."""
  plt = _pyplot()
  surface = np.asarray(surface, np.float64)
  fig, ax = plt.subplots(figsize=(4.8, 4.2))
  lo, hi = np.nanmin(surface), np.nanmax(surface)
  if lo > 0 and hi > lo:
    lv = np.geomspace(lo, hi, levels)
  else:
    lv = levels
  cs = ax.contour(np.asarray(alphas), np.asarray(betas), surface.T, levels=lv, linewidths=0.8)
  ax.clabel(cs, cs.levels[::6], fontsize=6, fmt="%.3g")
  ax.plot([0], [0], "k*", markersize=8)
  ax.set(xlabel="direction 1", ylabel="direction 2", title=title, aspect="equal")
  return _save(plt, fig, path)


def density(
    path: str, densities: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str = ""
) -> str:
  """Hessian eigenvalue densities on a log scale (as Ghorbani et al. plot them)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.6))
  peak = max(float(np.max(d)) for _, d in densities.values())
  for name, (grid, dens) in densities.items():  # floor at 1e-7 of the peak: Gaussian tails
    ax.semilogy(grid, np.maximum(np.asarray(dens), 1e-7 * peak), label=name)
  ax.set(xlabel="eigenvalue", ylabel="density", title=title)
  if len(densities) > 1:
    ax.legend()
  return _save(plt, fig, path)
