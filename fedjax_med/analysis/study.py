"""Study reports: collect a sweep's runs, aggregate over seeds, tabulate and plot.

``collect(study, sweep_dir)`` reads every run of the study grid
(``summary.json`` and ``metrics.jsonl``) into flat metric dicts:

- ``test.accuracy``, ``test.auc``, ``test.loss`` (and ``val.*``) at the last round,
- ``clients.worst`` / ``clients.mean`` / ``clients.p10`` (fedjax_med/client_eval.py),
- ``analysis.*``: the last sharpness record in ``metrics.jsonl`` (``config.analysis``),
- ``gap.loss``: test loss minus the analysis subset's (training) loss,
- ``total_bytes_up`` / ``total_mb_up``, ``wall_time_s``, ``rounds_completed``,
- ``target.round`` / ``target.elapsed_s`` / ``target.bytes_up`` / ``target.mb_up``:
  the first evaluation at which test accuracy reached ``fraction`` of the mean
  final accuracy of the *reference* runs (``report["reference"]``: axis labels,
  matched on the other non-seed axes), None if it never did.

``aggregate`` groups runs by axes and gives mean, 95% confidence half-width
(Student t over seeds) and n per metric; ``table_rows``, ``to_csv`` and
``to_markdown`` turn that into tables. ``make_report`` writes the CSV, PNGs and
``docs/results/<study>.md``.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import shutil
from collections.abc import Mapping, Sequence

import numpy as np

from fedjax_med import sweep

# Two-sided 95% Student t quantiles t_{0.975, dof} for dof = 1..30 (beyond: 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

DEFAULT_METRICS = ("test.accuracy", "test.auc", "clients.worst", "target.round",
                   "total_mb_up", "wall_time_s")
LABELS = {
    "test.accuracy": "test acc",
    "test.auc": "test AUC",
    "test.loss": "test loss",
    "clients.worst": "worst-client acc",
    "clients.mean": "mean client acc",
    "target.round": "rounds to target",
    "target.elapsed_s": "time to target (s)",
    "target.mb_up": "MB up to target",
    "target.bytes_up": "bytes up to target",
    "total_mb_up": "MB up (total)",
    "total_bytes_up": "bytes up (total)",
    "wall_time_s": "wall time (s)",
    "rounds_completed": "rounds",
    "analysis.loss": "train loss",
    "analysis.lambda_max": "λmax",
    "analysis.trace": "Hessian trace",
    "analysis.eps_sharpness": "ε-sharpness (%)",
    "gap.loss": "gen. gap (loss)",
    "relative.accuracy": "acc / centralized acc",
    "relative.drop": "acc drop vs centralized",
}


def t_quantile(dof: int) -> float:
  return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
  """(mean, 95% CI half-width, n) of the finite values; half-width NaN for n < 2."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  n = len(v)
  if n == 0:
    return math.nan, math.nan, 0
  if n == 1:
    return float(v[0]), math.nan, 1
  return float(v.mean()), float(t_quantile(n - 1) * v.std(ddof=1) / math.sqrt(n)), n


@dataclasses.dataclass
class RunResult:
  name: str
  axes: dict  # axis -> label (incl. "seed")
  metrics: dict  # flat metric -> float | None
  curve: list  # test evaluations: dicts with round, accuracy, auc, elapsed_s, bytes_up
  complete: bool


def _flatten(prefix: str, node, out: dict) -> None:
  if isinstance(node, Mapping):
    for k, v in node.items():
      _flatten(f"{prefix}.{k}" if prefix else k, v, out)
  elif isinstance(node, (int, float)) and not isinstance(node, bool):
    out[prefix] = float(node)


def read_run(sweep_dir: str, run: sweep.Run) -> RunResult:
  """One run's metrics (``complete`` False, and only the curve so far, if it has no summary)."""
  d = os.path.join(sweep_dir, run.name)
  flat: dict = {}
  summary_path = os.path.join(d, "summary.json")
  complete = os.path.exists(summary_path)
  if complete:
    with open(summary_path) as f:
      summary = json.load(f)
    clients = summary.pop("clients", None) or {}
    clients.pop("accuracy", None)
    clients.pop("model", None)
    _flatten("", {k: v for k, v in summary.items() if k != "engine"}, flat)
    _flatten("clients", clients, flat)
    if "total_bytes_up" in flat:
      flat["total_mb_up"] = flat["total_bytes_up"] / 1e6
  records = []
  path = os.path.join(d, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      records = [json.loads(line) for line in f if line.strip()]
  curve = [r for r in records if r.get("split") == "test"]
  analysis = [r for r in records if r.get("split") == "analysis"]
  if analysis:
    _flatten("analysis", {k: v for k, v in analysis[-1].items()
                          if k not in ("round", "split", "seconds")}, flat)
    if "test.loss" in flat and "analysis.loss" in flat:
      flat["gap.loss"] = flat["test.loss"] - flat["analysis.loss"]
  return RunResult(run.name, dict(run.axes), flat, curve, complete)


def collect(study: sweep.Study, sweep_dir: str) -> list[RunResult]:
  """Every run of the study grid (complete or not), with targets filled in."""
  results = [read_run(sweep_dir, r) for r in sweep.expand(study)]
  reference = study.report.get("reference")
  if reference:
    add_targets(results, reference, study.report.get("target_fraction", 0.95))
  relative = study.report.get("relative")
  if relative:
    add_relative(results, relative["axis"], relative["reference"])
  return results


def _key(axes: Mapping, drop: Sequence[str]) -> tuple:
  return tuple((k, v) for k, v in axes.items() if k not in drop)


def add_targets(results: list[RunResult], reference: Mapping[str, str], fraction: float) -> None:
  """Fills ``target.*`` of each run: first evaluation with test accuracy >= ``fraction`` x the
  mean final accuracy of the reference runs that share the run's other axis labels."""
  drop = set(reference) | {"seed"}
  refs: dict[tuple, list[float]] = {}
  for r in results:
    if r.complete and all(r.axes.get(k) == v for k, v in reference.items()):
      refs.setdefault(_key(r.axes, drop), []).append(r.metrics.get("test.accuracy"))
  for r in results:
    accs = refs.get(_key(r.axes, drop))
    if not accs or not r.complete:
      continue
    target = fraction * float(np.mean(accs))
    r.metrics["target.accuracy"] = target
    hit = next((x for x in r.curve if x["accuracy"] >= target), None)
    r.metrics["target.reached"] = 1.0 if hit else 0.0
    for name, field in (("round", "round"), ("elapsed_s", "elapsed_s"), ("bytes_up", "bytes_up")):
      r.metrics[f"target.{name}"] = float(hit[field]) if hit and field in hit else None
    if r.metrics["target.bytes_up"] is not None:
      r.metrics["target.mb_up"] = r.metrics["target.bytes_up"] / 1e6


def add_relative(results: list[RunResult], axis: str, reference: str) -> None:
  """``relative.accuracy`` = acc / acc of the same-seed run with ``axis`` = ``reference``, and
  ``relative.drop`` = reference acc - acc (both paired by seed and the other axes)."""
  refs = {_key(r.axes, {axis}): r.metrics.get("test.accuracy")
          for r in results if r.complete and r.axes.get(axis) == reference}
  for r in results:
    ref = refs.get(_key(r.axes, {axis}))
    acc = r.metrics.get("test.accuracy")
    if ref and acc is not None:
      r.metrics["relative.accuracy"] = acc / ref
      r.metrics["relative.drop"] = ref - acc


def axis_order(study: sweep.Study) -> dict[str, list[str]]:
  """Labels of each axis in the order the study lists them (grids in order)."""
  order: dict[str, list[str]] = {}
  for grid in study.grids:
    for axis, labels in grid.items():
      order.setdefault(axis, [])
      order[axis] += [k for k in labels if k not in order[axis]]
  order["seed"] = [str(s) for s in study.seeds]
  return order


def aggregate(results: Sequence[RunResult], by: Sequence[str], metrics: Sequence[str],
              order: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
  """Rows ``{axis: label, ..., "n_runs", "n_complete", metric: (mean, ci, n)}`` grouped by ``by``."""
  groups: dict[tuple, list[RunResult]] = {}
  for r in results:
    groups.setdefault(tuple(r.axes[a] for a in by), []).append(r)
  order = order or {}

  def sort_key(key):
    return tuple(order[a].index(v) if a in order and v in order[a] else 0
                 for a, v in zip(by, key, strict=True))

  rows = []
  for key in sorted(groups, key=sort_key):
    runs = groups[key]
    done = [r for r in runs if r.complete]
    row = dict(zip(by, key, strict=True))
    row["n_runs"], row["n_complete"] = len(runs), len(done)
    for m in metrics:
      row[m] = mean_ci([r.metrics.get(m) for r in done])
    if any("target.reached" in r.metrics for r in done):
      row["target.reached"] = sum(r.metrics.get("target.reached", 0) for r in done)
    rows.append(row)
  return rows


# Decimals per metric in tables (default 3).
DIGITS = {"target.round": 1, "target.elapsed_s": 1, "target.mb_up": 1, "total_mb_up": 1,
          "wall_time_s": 0, "rounds_completed": 0, "analysis.loss": 3, "analysis.lambda_max": 2,
          "analysis.trace": 1, "analysis.eps_sharpness": 2}


def fmt(value: tuple[float, float, int], digits: int = 3) -> str:
  mean, ci, n = value
  if n == 0 or not np.isfinite(mean):
    return "–"
  f = lambda x: f"{x:.{digits}f}"  # noqa: E731
  return f(mean) if not np.isfinite(ci) else f"{f(mean)} ± {f(ci)}"


def _description(text: str) -> str:
  """The study docstring without its command lines (the report prints them itself)."""
  keep = [line for line in text.strip().splitlines()
          if not line.startswith("  python") and not line.startswith("      ")]
  return "\n".join(keep).strip()


def to_markdown(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> str:
  reached = any("target.reached" in r for r in rows)
  head = list(by) + [LABELS.get(m, m) for m in metrics] + (["reached"] if reached else []) + ["n"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(by) + "---:|" * (len(head) - len(by))]
  for r in rows:
    cells = [str(r[a]) for a in by] + [fmt(r[m], DIGITS.get(m, 3)) for m in metrics]
    if reached:
      cells.append(f"{int(r.get('target.reached', 0))}/{r['n_complete']}")
    cells.append(f"{r['n_complete']}" + (f"/{r['n_runs']}" if r["n_complete"] < r["n_runs"] else ""))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def to_csv(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> str:
  out = io.StringIO()
  w = csv.writer(out)
  w.writerow(list(by) + [f"{m}.{s}" for m in metrics for s in ("mean", "ci95", "n")] +
             ["n_complete", "n_runs"])
  for r in rows:
    w.writerow([r[a] for a in by] + [x for m in metrics for x in r[m]] +
               [r["n_complete"], r["n_runs"]])
  return out.getvalue()


def mean_curve(curves: Sequence[list], x: str, y: str = "accuracy"):
  """Seed-mean of evaluation curves aligned by evaluation index: (x, mean y, 95% CI)."""
  curves = [c for c in curves if c]
  if not curves:
    return [], [], []
  n = min(len(c) for c in curves)
  xs = [float(np.mean([c[i].get(x, np.nan) for c in curves])) for i in range(n)]
  stats = [mean_ci([c[i][y] for c in curves]) for i in range(n)]
  return xs, [s[0] for s in stats], [s[1] for s in stats]


def _select(results, where: Mapping | None):
  return [r for r in results if all(r.axes.get(k) == v for k, v in (where or {}).items())]


def figures(study: sweep.Study, results: list[RunResult], out_dir: str, prefix: str) -> list:
  """Writes the study's PNG figures; returns ``[(title, file name)]``."""
  from fedjax_med.analysis import plots

  order = axis_order(study)
  written = []
  for i, spec in enumerate(study.report.get("figures", [])):
    sel = _select([r for r in results if r.complete], spec.get("where"))
    kind = spec["kind"]
    name = f"{prefix}_{i}_{kind}.png"
    path = os.path.join(out_dir, name)
    if kind == "curves":
      x = spec["x"]
      panel_lines = {}
      for p in order.get(spec.get("panel"), [None]):
        lines = {}
        for c in order[spec["color"]]:
          group = [r.curve for r in sel if r.axes.get(spec["color"]) == c and
                   (p is None or r.axes.get(spec["panel"]) == p)]
          if x in ("bytes_up",):
            group = [[{**e, "bytes_up": e.get("bytes_up", 0) / 1e6} for e in g] for g in group]
          xs, ys, cis = mean_curve(group, x)
          if xs:
            lines[c] = (xs, ys, cis)
        if lines:
          panel_lines[p or ""] = lines
      if not panel_lines:
        continue
      xlabel = {"round": "round", "elapsed_s": "wall time (s)", "bytes_up": "MB uploaded"}[x]
      plots.panels(path, panel_lines, xlabel, "test accuracy (mean ± 95% CI)",
                   logx=spec.get("logx", False))
      written.append((f"Test accuracy vs {xlabel}", name))
    elif kind in ("bars", "vs_axis"):
      metrics = spec.get("metrics", ["test.accuracy"])
      data = {}
      for m in metrics:
        groups = {}
        for c in order.get(spec.get("color"), [None]):
          vals = {}
          for xl in spec.get("order", order[spec["x"]]):
            group = [r for r in sel if r.axes.get(spec["x"]) == xl and
                     (c is None or r.axes.get(spec["color"]) == c)]
            if group:
              vals[xl] = mean_ci([r.metrics.get(m) for r in group])[:2]
          if vals:
            groups[c or m] = vals
        if groups:
          data[LABELS.get(m, m)] = groups
      if not data:
        continue
      if kind == "bars":
        plots.grouped_bars(path, data, spec["x"])
      else:
        panel = {}
        for m, groups in data.items():
          xorder = list(spec.get("order", order[spec["x"]]))
          panel[m] = {g: ([xorder.index(k) for k in v], [x[0] for x in v.values()],
                          [x[1] for x in v.values()]) for g, v in groups.items()}
        plots.panels(path, panel, spec["x"], "mean ± 95% CI",
                     xticks=spec.get("order", order[spec["x"]]))
      written.append((", ".join(data) + f" by {spec['x']}", name))
    elif kind == "heatmap":
      metric = "relative.accuracy" if spec.get("relative") else spec["metric"]
      rows_ = order[spec["rows"]]
      cols = [c for c in order[spec["cols"]]
              if not (spec.get("relative") and c == study.report["relative"]["reference"])]
      values = np.full((len(rows_), len(cols)), np.nan)
      for a, rl in enumerate(rows_):
        for b, cl in enumerate(cols):
          values[a, b] = mean_ci([r.metrics.get(metric) for r in sel
                                  if r.axes.get(spec["rows"]) == rl and
                                  r.axes.get(spec["cols"]) == cl])[0]
      plots.heatmap(path, rows_, cols, values, LABELS.get(metric, metric))
      written.append((LABELS.get(metric, metric), name))
  return written


def landscapes(study: sweep.Study, sweep_dir: str, out_dir: str, prefix: str) -> tuple[list, str]:
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
    line = result.get("line_1")
    center = line[len(line) // 2] if line else math.nan
    edge = max(line[0], line[-1]) if line else math.nan
    row = {"step": p.name, "loss at A": center, "loss at ±span (dir 1, max)": edge}
    if "interpolation" in result:
      i = result["interpolation"]
      t, loss = np.asarray(i["t"]), np.asarray(i["loss"])
      inside = (t >= 0) & (t <= 1)
      la, lb = float(loss[np.argmin(abs(t))]), float(loss[np.argmin(abs(t - 1))])
      row["loss at B"] = lb
      row["barrier on A→B"] = float(max(0.0, np.max(loss[inside] - ((1 - t) * la + t * lb)[inside])))
    rows.append(row)
  if not rows:
    return written, ""
  cols = list(dict.fromkeys(k for r in rows for k in r))
  md = ["| " + " | ".join(cols) + " |", "|---|" + "---:|" * (len(cols) - 1)]
  for r in rows:
    md.append("| " + " | ".join(str(r.get(c, "–")) if c == "step" else
                                (f"{r[c]:.4f}" if c in r else "–") for c in cols) + " |")
  return written, "\n".join(md)


def run_error(sweep_dir: str, name: str) -> str:
  """Why a run has no summary: its log's last ``error:`` line, or 'not run (yet)'."""
  path = os.path.join(sweep_dir, "logs", name + ".log")
  if not os.path.exists(path):
    return "not run (yet)"
  with open(path, errors="replace") as f:
    errors_ = [line.strip() for line in f if line.startswith("error:")]
  if not errors_:
    return "incomplete (interrupted or running)"
  return errors_[-1].split(". ")[0].replace("|", "/")  # first sentence, table-safe


def machine() -> str:
  import jax

  dev = jax.devices()[0]
  return (f"{platform.node() or 'host'}: {os.cpu_count()} CPU cores, {platform.system()} "
          f"{platform.machine()}, jax {jax.__version__} on {dev.platform}")


def make_report(study: sweep.Study, sweep_dir: str, spec: str, out_md: str,
                plots_ok: bool = True) -> dict:
  """Writes ``out_md``, ``<stem>.csv`` and ``<stem>/*.png``; returns the table rows."""
  results = collect(study, sweep_dir)
  rep = study.report
  by = list(rep.get("table", [a for a in axis_order(study) if a != "seed"]))
  metrics = list(rep.get("metrics", DEFAULT_METRICS))
  if rep.get("relative") and "relative.drop" not in metrics:
    metrics += ["relative.accuracy", "relative.drop"]
  order = axis_order(study)
  rows = aggregate(results, by, metrics, order)
  stem = os.path.splitext(out_md)[0]
  os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
  with open(stem + ".csv", "w") as f:
    f.write(to_csv(rows, by, metrics))
  fig_dir = stem
  written, land_md = [], ""
  if plots_ok:
    os.makedirs(fig_dir, exist_ok=True)
    written = figures(study, results, fig_dir, study.preset)
    extra, land_md = landscapes(study, sweep_dir, fig_dir, study.preset)
    written += extra
  complete = sum(r.complete for r in results)
  rel = os.path.basename(stem)
  doc = [f"# Study: {study.name} (preset `{study.preset}`)", "",
         f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {machine()}; "
         f"{complete} of {len(results)} runs complete. Every number below comes from the "
         f"`{study.preset}` preset.", "",
         "## What was run", "", _description(study.description), "", "Commands:", "", "```",
         f"python launch/sweep.py --study={spec} --jobs=2 --workdir={sweep_dir}",
         f"python analysis/report.py --study={spec} --workdir={sweep_dir}", "```", "",
         "Tables give the mean ± 95% confidence half-width (Student t) over seeds; "
         f"n = complete runs. CSV: [`{rel}.csv`]({rel}.csv). Wall times come from runs made "
         "with the command above (`--jobs=2`: two runs share the machine), so they compare "
         "within this report only.", ""]
  if rep.get("reference"):
    ref = ", ".join(f"{k}={v}" for k, v in rep["reference"].items())
    doc += [f"Target: {rep.get('target_fraction', 0.95):.0%} of the mean final test accuracy of "
            f"the {ref} runs with the same other settings; *rounds / time / MB to target* are "
            "means over the runs that reached it (*reached* counts them).", ""]
  doc += ["## Results", "", to_markdown(rows, by, metrics), ""]
  paper = rep.get("paper")
  if paper:
    ours = [r for r in rows if all(r.get(k) == v for k, v in paper.items()
                                   if k in by)]
    if ours:
      acc, auc = ours[0]["test.accuracy"], ours[0]["test.auc"]
      doc += ["## Against the published baseline", "",
              f"{paper['source']}: ACC {paper['accuracy']:.3f}, AUC {paper['auc']:.3f}. "
              f"Ours ({', '.join(f'{k}={v}' for k, v in paper.items() if k in by)}): "
              f"ACC {fmt(acc)}, AUC {fmt(auc)}; difference {acc[0] - paper['accuracy']:+.3f} "
              f"ACC, {auc[0] - paper['auc']:+.3f} AUC.", ""]
  if land_md:
    doc += ["## Loss landscapes (seed 0)", "",
            "A = the first run of the step, B = the second (centralized). Losses on a fixed "
            "500-example training subset, eval mode; directions filter-normalized "
            "(Li et al. 2018), so *loss at ±span* is the larger loss one filter-normalized unit "
            "away from A along a random direction (flatness at a common scale). *Barrier* = the "
            "largest excess of the loss on the straight line (1-t)A + tB over the line "
            "joining its end values (0: no barrier).", "", land_md, ""]
  if written:
    doc += ["## Figures", ""]
    for title, name in written:
      doc += [f"**{title}**", "", f"![{title}]({rel}/{name})", ""]
  missing = [r.name for r in results if not r.complete]
  if missing:
    doc += ["## Incomplete runs", "",
            "Not in the tables above; the reason is the run's last `error:` log line.", "",
            *[f"- `{m}`: {run_error(sweep_dir, m)}" for m in missing], ""]
  with open(out_md + ".tmp", "w") as f:
    f.write("\n".join(doc))
  os.replace(out_md + ".tmp", out_md)
  return {"rows": rows, "figures": written, "complete": complete, "total": len(results)}
