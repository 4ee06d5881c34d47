"""The figures of a study report (PNG, through ``fedjax_med/analysis/plots.py``).

One function per figure spec (``fedjax_med/studies/specs.py``), chosen by an
explicit table; each reads :class:`RunResult` lists and writes one file named
``<prefix>_<index>_<kind>.png``. ``landscapes`` copies the plots the post steps
made and tabulates their losses.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence

import numpy as np

from fedjax_med.studies import grid, tables
from fedjax_med.studies.results import RunResult, select
from fedjax_med.studies.specs import (
  CURVE_X,
  BarFigure,
  CurveFigure,
  HeatmapFigure,
  LineFigure,
  Study,
)
from fedjax_med.studies.stats import mean_ci, mean_curve


def _curves(fig: CurveFigure, study: Study, sel: Sequence[RunResult], path: str):
  from fedjax_med.analysis import plots

  order = grid.axis_order(study)
  panel_lines = {}
  for p in order[fig.panel] if fig.panel else [None]:
    lines = {}
    for c in order[fig.color]:
      group = [r.curve for r in sel if r.axes.get(fig.color) == c and
               (p is None or r.axes.get(fig.panel) == p)]
      if fig.x == "bytes_up":
        group = [[{**e, "bytes_up": e.get("bytes_up", 0) / 1e6} for e in g] for g in group]
      xs, ys, cis = mean_curve(group, fig.x)
      if xs:
        lines[c] = (xs, ys, cis)
    if lines:
      panel_lines[p or ""] = lines
  if not panel_lines:
    return None
  xlabel = CURVE_X[fig.x]
  plots.panels(path, panel_lines, xlabel, "test accuracy (mean ± 95% CI)", logx=fig.logx)
  return f"Test accuracy vs {xlabel}"


def _metric_data(fig: BarFigure | LineFigure, study: Study, sel: Sequence[RunResult]):
  """``{metric title: {group: {x label: (mean, ci)}}}`` and the x labels."""
  order = grid.axis_order(study)
  xorder = list(fig.order or order[fig.x])
  data = {}
  for m in fig.metrics:
    groups = {}
    for c in order[fig.color] if fig.color else [None]:
      vals = {}
      for xl in xorder:
        group = [r for r in sel if r.axes.get(fig.x) == xl and
                 (c is None or r.axes.get(fig.color) == c)]
        if group:
          vals[xl] = mean_ci([r.metrics.get(m) for r in group])[:2]
      if vals:
        groups[c or m] = vals
    if groups:
      data[tables.label(m)] = groups
  return data, xorder


def _bars(fig: BarFigure, study: Study, sel: Sequence[RunResult], path: str):
  from fedjax_med.analysis import plots

  data, _ = _metric_data(fig, study, sel)
  if not data:
    return None
  plots.grouped_bars(path, data, fig.x)
  return ", ".join(data) + f" by {fig.x}"


def _lines(fig: LineFigure, study: Study, sel: Sequence[RunResult], path: str):
  from fedjax_med.analysis import plots

  data, xorder = _metric_data(fig, study, sel)
  if not data:
    return None
  panel = {m: {g: ([xorder.index(k) for k in v], [x[0] for x in v.values()],
                   [x[1] for x in v.values()]) for g, v in groups.items()}
           for m, groups in data.items()}
  plots.panels(path, panel, fig.x, "mean ± 95% CI", xticks=xorder)
  return ", ".join(data) + f" by {fig.x}"


def _heatmap(fig: HeatmapFigure, study: Study, sel: Sequence[RunResult], path: str):
  from fedjax_med.analysis import plots

  order = grid.axis_order(study)
  metric = "relative.accuracy" if fig.relative else fig.metric
  skip = study.report.relative.reference if fig.relative else None
  rows = order[fig.rows]
  cols = [c for c in order[fig.cols] if c != skip]
  values = np.full((len(rows), len(cols)), np.nan)
  for a, rl in enumerate(rows):
    for b, cl in enumerate(cols):
      values[a, b] = mean_ci([r.metrics.get(metric) for r in sel
                              if r.axes.get(fig.rows) == rl and r.axes.get(fig.cols) == cl])[0]
  title = tables.label(metric)
  plots.heatmap(path, rows, cols, values, title)
  return title


_DRAW = {CurveFigure: _curves, BarFigure: _bars, LineFigure: _lines, HeatmapFigure: _heatmap}


def figures(study: Study, results: list[RunResult], out_dir: str,
            prefix: str) -> list[tuple[str, str]]:
  """Writes the study's PNG figures (a figure without data is left out).

  Returns:
    ``[(title, file name)]`` of the files written in ``out_dir``.
  """
  written = []
  for i, fig in enumerate(study.report.figures):
    name = f"{prefix}_{i}_{fig.kind}.png"
    title = _DRAW[type(fig)](fig, study, select(results, fig.where), os.path.join(out_dir, name))
    if title:
      written.append((title, name))
  return written


def _landscape_row(name: str, result: dict) -> dict:
  """Losses at A, at ±span along direction 1, at B and the A→B barrier of one scan."""
  line = result.get("line_1")
  center = line[len(line) // 2] if line else math.nan
  edge = max(line[0], line[-1]) if line else math.nan
  row = {"step": name, "loss at A": center, "loss at ±span (dir 1, max)": edge}
  if "interpolation" in result:
    i = result["interpolation"]
    t, loss = np.asarray(i["t"]), np.asarray(i["loss"])
    inside = (t >= 0) & (t <= 1)
    la, lb = float(loss[np.argmin(abs(t))]), float(loss[np.argmin(abs(t - 1))])
    row["loss at B"] = lb
    row["barrier on A→B"] = float(max(0.0, np.max(loss[inside] - ((1 - t) * la + t * lb)[inside])))
  return row


def landscapes(study: Study, sweep_dir: str, out_dir: str, prefix: str) -> tuple[list, str]:
  """Copies the post steps' landscape PNGs; returns ``([(title, file)], markdown table)``."""
  written, rows = [], []
  for p in study.post:
    out = p.output.format(sweep=sweep_dir)
    if not os.path.exists(out):
      continue
    with open(out) as f:
      result = json.load(f)
    src_dir = os.path.dirname(out)
    for png in ("landscape_2d.png", "interpolation.png"):
      if os.path.exists(os.path.join(src_dir, png)):
        name = f"{prefix}_{p.name}_{png}"
        shutil.copyfile(os.path.join(src_dir, png), os.path.join(out_dir, name))
        written.append((f"{p.name}: {png[:-4].replace('_', ' ')}", name))
    rows.append(_landscape_row(p.name, result))
  if not rows:
    return written, ""
  cols = list(dict.fromkeys(k for r in rows for k in r))
  md = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
  for r in rows:
    md.append("| " + " | ".join(str(r.get(c, "–")) if c == "step" else
                                (f"{r[c]:.4f}" if c in r else "–") for c in cols) + " |")
  return written, "\n".join(md)
