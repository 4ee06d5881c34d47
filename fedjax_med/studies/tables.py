"""Tables of a study: runs grouped by axes, mean ± 95% CI per metric, as Markdown and CSV.

Metric names are dotted paths into a run's flat metrics (``results.py`` flattens
every numeric leaf of ``summary.json``, e.g. ``selected.best_val.test.auc``); a
metric a run lacks is left out of that run's mean and counted (``missing``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence

import numpy as np

from fedjax_med.studies.results import RunResult
from fedjax_med.studies.stats import mean_ci

# Column and axis titles of the metrics.
LABELS = {
    "test.accuracy": "test acc",
    "test.auc": "test AUC",
    "test.loss": "test loss",
    "test.balanced_accuracy": "test bal. acc",
    "val.balanced_accuracy": "val bal. acc",
    "clients.worst": "worst-client acc (reweighted, pre-sites)",
    "clients.mean": "mean client acc (reweighted, pre-sites)",
    "selected.best_val.test.balanced_accuracy": "test bal. acc (best val)",
    "selected.best_val.test.auc": "test AUC (best val)",
    "selected.best_val.test.accuracy": "test acc (best val)",
    "selected.last3.test.balanced_accuracy": "test bal. acc (last 3)",
    "sites.balanced_accuracy.worst": "worst-site bal. acc",
    "sites.balanced_accuracy.mean": "mean-site bal. acc",
    "sites.balanced_accuracy.spread": "site bal. acc spread",
    "sites.auc.mean": "mean-site AUC",
    "heterogeneity.label_tv_mean": "label TV (mean)",
    "heterogeneity.effective_classes_mean": "eff. classes (mean)",
    "target.round": "rounds to target",
    "target.elapsed_s": "time to target (s)",
    "target.mb_up": "MB up to target",
    "target.bytes_up": "bytes up to target",
    "total_mb_up": "MB up (total)",
    "total_bytes_up": "bytes up (total)",
    "wall_time_s": "wall time (s)",
    "rounds_completed": "rounds",
    "rounds_to_target": "rounds to comm.target_accuracy",
    "bytes_up_to_target": "bytes up to comm.target_accuracy",
    "analysis.loss": "train loss",
    "analysis.lambda_max": "λmax",
    "analysis.trace": "Hessian trace",
    "analysis.eps_sharpness": "ε-sharpness (%)",
    "gap.loss": "gen. gap (loss)",
    "analysis.stability_ratio": "λmax·lr/2",
    "matched.lambda_max": "λmax @ matched loss",
    "matched.trace": "trace @ matched loss",
    "matched.eps_sharpness": "ε-sharpness @ matched loss",
    "matched.round": "matched at round",
    "sites.auc.worst": "worst-site AUC",
    "sites_vs_local.wins": "sites better than local",
    "sites_vs_local.gain": "per-site gain vs local",
    "sites_finetuned_vs_local.wins": "fine-tuned: sites better than local",
    "sites_finetuned_vs_local.gain": "fine-tuned: per-site gain vs local",
    "client_store_bytes": "per-client state (bytes)",
    "relative.accuracy": "acc / reference acc",  # ReportSpec.relative names the reference
    "relative.drop": "acc drop vs reference",
}
# Short names of the last component of other metric paths, e.g.
# ``selected.last3.test.balanced_accuracy`` -> ``selected.last3.test bal. acc``.
LEAF_LABELS = {"balanced_accuracy": "bal. acc", "accuracy": "acc", "auc": "AUC"}


def label(metric: str) -> str:
  """The column title of a metric path."""
  if metric in LABELS:
    return LABELS[metric]
  head, _, leaf = metric.rpartition(".")
  return f"{head} {LEAF_LABELS[leaf]}" if head and leaf in LEAF_LABELS else metric


def group(results: Sequence[RunResult], by: Sequence[str],
          order: Mapping[str, Sequence[str]] | None = None) -> dict[tuple, list[RunResult]]:
  """Runs grouped by their labels of the axes ``by``, groups sorted by ``order`` (axis ->
  labels in study order; unknown labels first)."""
  groups: dict[tuple, list[RunResult]] = {}
  for r in results:
    groups.setdefault(tuple(r.axes.get(a) for a in by), []).append(r)
  order = order or {}

  def sort_key(key):
    return tuple(order[a].index(v) if a in order and v in order[a] else 0
                 for a, v in zip(by, key, strict=True))

  return {key: groups[key] for key in sorted(groups, key=sort_key)}


def aggregate(results: Sequence[RunResult], by: Sequence[str], metrics: Sequence[str],
              order: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
  """Groups runs by the labels of the axes ``by`` (in ``order``) and summarizes ``metrics``.

  Returns:
    Rows ``{axis: label, ..., "n_runs", "n_complete", metric: (mean, ci, n)}``
    over the complete runs of each group, plus ``target.reached`` (a count)
    where targets were computed.
  """
  rows = []
  for key, runs in group(results, by, order).items():
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
DIGITS = {"test.balanced_accuracy": 3, "val.balanced_accuracy": 3, "target.round": 1, "target.elapsed_s": 1, "target.mb_up": 1, "total_mb_up": 1,
          "wall_time_s": 0, "rounds_completed": 0, "rounds_to_target": 1,
          "bytes_up_to_target": 0, "analysis.loss": 3, "analysis.lambda_max": 2,
          "analysis.trace": 1, "analysis.eps_sharpness": 2}


def fmt(value: tuple[float, float, int], digits: int = 3, of: int | None = None) -> str:
  """``mean ± ci`` (``mean`` alone for one run, ``—`` for none); ``(n=k)`` when the metric
  is in fewer than ``of`` runs."""
  mean, ci, n = value
  if n == 0 or not np.isfinite(mean):
    return "—"
  f = lambda x: f"{x:.{digits}f}"  # noqa: E731
  text = f(mean) if not np.isfinite(ci) else f"{f(mean)} ± {f(ci)}"
  return text + (f" (n={n})" if of is not None and n < of else "")


def to_markdown(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> str:
  """A Markdown table of :func:`aggregate` rows: axes, ``mean ± ci`` per metric, reached, n."""
  reached = any("target.reached" in r for r in rows)
  head = list(by) + [label(m) for m in metrics] + (["reached"] if reached else []) + ["n"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(by) + "---:|" * (len(head) - len(by))]
  for r in rows:
    cells = [str(r[a]) for a in by] + [fmt(r[m], DIGITS.get(m, 3), r["n_complete"])
                                       for m in metrics]
    if reached:
      cells.append(f"{int(r.get('target.reached', 0))}/{r['n_complete']}")
    cells.append(f"{r['n_complete']}" + (f"/{r['n_runs']}" if r["n_complete"] < r["n_runs"] else ""))
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def to_csv(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str]) -> str:
  """:func:`aggregate` rows as CSV: ``<metric>.mean``, ``.ci95``, ``.n`` columns."""
  out = io.StringIO()
  w = csv.writer(out)
  w.writerow(list(by) + [f"{m}.{s}" for m in metrics for s in ("mean", "ci95", "n")] +
             ["n_complete", "n_runs"])
  for r in rows:
    w.writerow([r[a] for a in by] + [x for m in metrics for x in r[m]] +
               [r["n_complete"], r["n_runs"]])
  return out.getvalue()


def missing(results: Sequence[RunResult], metrics: Sequence[str]) -> dict[str, tuple[int, int]]:
  """``{metric: (complete runs without it, complete runs)}`` for the metrics some run lacks."""
  done = [r for r in results if r.complete]
  counts = {m: sum(r.metrics.get(m) is None for r in done) for m in metrics}
  return {m: (k, len(done)) for m, k in counts.items() if k}


def runs_to_csv(results: Sequence[RunResult], axes: Sequence[str], metrics: Sequence[str]) -> str:
  """One CSV row per run: name, every axis label (incl. seed), complete (0/1), each metric
  (empty when missing)."""
  out = io.StringIO()
  w = csv.writer(out)
  w.writerow(["run", *axes, "complete", *metrics])
  for r in results:
    values = [r.metrics.get(m) for m in metrics]
    w.writerow([r.name, *[r.axes.get(a, "") for a in axes], int(r.complete),
                *["" if v is None else v for v in values]])
  return out.getvalue()
