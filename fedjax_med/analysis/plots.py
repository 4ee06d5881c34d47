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


# Multi-axis figures are at most this wide (inches at 120 dpi: 1,200 px), so that they
# are readable in a 1,200 px column without scaling their text down.
MAX_WIDTH_IN = 10.0


def _save(plt, fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches="tight")  # keeps a legend placed outside the axes
  plt.close(fig)
  return path


def _legend_below(fig, axes) -> None:
  """One legend for the whole figure, below the axes, so it never covers data."""
  seen = {}
  for ax in axes:
    for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
      seen.setdefault(label, handle)
  if seen:
    fig.legend(list(seen.values()), list(seen), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(4, len(seen)), fontsize=8, frameon=False)


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


def panels(
    path: str,
    panel_lines: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]]],
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    xticks: Sequence[str] = (),
) -> str:
  """Side-by-side axes (one per panel) of mean curves with a shaded band (``name -> (x, y, ci)``).

  Bands are drawn only on panels with at most 4 curves (more would hide the lines).
  """
  plt = _pyplot()
  n = max(1, len(panel_lines))
  cols = min(n, 2)
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(min(5.0 * cols, MAX_WIDTH_IN), 3.6 * rows),
                           squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis("off")
  for ax, (title, lines) in zip(axes.flat, panel_lines.items(), strict=False):
    for name, (x, y, ci) in lines.items():
      x, y, ci = (np.asarray(v, np.float64) for v in (x, y, ci))
      (line,) = ax.plot(x, y, label=name, marker=".", markersize=3)
      ok = np.isfinite(ci)
      if ok.any() and len(lines) <= 4:
        ax.fill_between(x[ok], (y - ci)[ok], (y + ci)[ok], color=line.get_color(), alpha=0.15)
    if logx:
      ax.set_xscale("log")
    if xticks:
      ax.set_xticks(range(len(xticks)), list(xticks))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  _legend_below(fig, axes.flat[:n])
  return _save(plt, fig, path)


def grouped_bars(
    path: str,
    metrics: Mapping[str, Mapping[str, Mapping[str, tuple[float, float]]]],
    xlabel: str,
) -> str:
  """One axis per metric; bars ``metric -> group -> x label -> (mean, ci)`` with error bars."""
  plt = _pyplot()
  n = max(1, len(metrics))
  w = max(4.5, 1.5 + 0.35 * _width(metrics) * max(1, len(next(iter(metrics.values()), {}))))
  cols = min(n, 2) if 2 * w <= MAX_WIDTH_IN else 1  # wide bar groups: one axis per row
  rows = -(-n // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(min(w * cols, MAX_WIDTH_IN), 3.6 * rows),
                           squeeze=False)
  for ax in axes.flat[n:]:
    ax.axis("off")
  for ax, (metric, groups) in zip(axes.flat, metrics.items(), strict=False):
    xs = list(dict.fromkeys(x for g in groups.values() for x in g))
    width = 0.8 / max(1, len(groups))
    for i, (group, values) in enumerate(groups.items()):
      pos = [xs.index(x) + (i - (len(groups) - 1) / 2) * width for x in values]
      mean = [v[0] for v in values.values()]
      ci = [v[1] if np.isfinite(v[1]) else 0.0 for v in values.values()]
      ax.bar(pos, mean, width, yerr=ci, capsize=2, label=group)
    # A row of 2 runs has a t-interval ~13 sd wide: clip the axis to the means (the
    # table gives the intervals) rather than flatten every bar.
    means = [v[0] for g in groups.values() for v in g.values() if np.isfinite(v[0])]
    if means:
      ax.set_ylim(min(0.0, 1.15 * min(means)), 1.15 * max(means) if max(means) > 0 else None)
    ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=7)
    ax.set(xlabel=xlabel, title=metric)
    ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  if any(len(groups) > 1 for groups in metrics.values()):
    _legend_below(fig, axes.flat[:n])
  return _save(plt, fig, path)


def _width(metrics) -> int:
  return max((len(g) for groups in metrics.values() for g in groups.values()), default=1)


def heatmap(
    path: str, rows: Sequence[str], cols: Sequence[str], values: np.ndarray, title: str = "",
    fmt: str = "{:.3f}",
) -> str:
  """A labelled heat map of ``values[len(rows), len(cols)]`` (NaN = missing) with the numbers."""
  plt = _pyplot()
  values = np.asarray(values, np.float64)
  fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 1.0 + 0.5 * len(rows)))
  im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", aspect="auto")
  ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
  ax.set_yticks(range(len(rows)), rows)
  for i in range(len(rows)):
    for j in range(len(cols)):
      if np.isfinite(values[i, j]):
        ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", color="w", fontsize=8)
  fig.colorbar(im, ax=ax)
  ax.set_title(title)
  return _save(plt, fig, path)
