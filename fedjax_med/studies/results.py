"""A sweep's runs as flat metrics: ``collect(study, sweep_dir)`` -> :class:`RunResult` list.

Each run's ``summary.json`` and ``metrics.jsonl`` become flat metric dicts. Every
numeric leaf of ``summary.json`` is kept under its dotted path (except ``engine``, and
``clients.accuracy`` / ``clients.model``), so a report can name any nested field, e.g.
``selected.best_val.test.balanced_accuracy`` or ``heterogeneity.label_tv_mean``; a
field a run lacks (or that is None, a string or a list) is simply absent. Among them:

- ``test.accuracy``, ``test.auc``, ``test.loss`` (and ``val.*``) at the last round,
- ``selected.best_val.test.*`` / ``selected.last3.test.*``: validation-selected and
  last-three-mean test metrics; ``sites.<metric>.{mean,worst,spread}``: every site on its
  own held-out share; ``heterogeneity.*``: the measured skew of the partition,
- ``clients.worst`` / ``clients.mean`` / ``clients.p10``: runs made before the per-site
  shares (the pooled test split reweighted to each client's label mix),
- ``analysis.*``: the last sharpness record in ``metrics.jsonl`` (``config.analysis``),
- ``gap.loss``: test loss minus the analysis subset's (training) loss,
- ``total_bytes_up`` / ``total_mb_up``, ``wall_time_s``, ``rounds_completed``,
- ``target.round`` / ``target.elapsed_s`` / ``target.bytes_up`` / ``target.mb_up``:
  the first evaluation at which test accuracy reached ``Target.fraction`` of the
  mean final accuracy of the reference runs (matched on the other non-seed
  axes), None if it never did,
- ``relative.accuracy`` / ``relative.drop`` against a same-seed reference run,
- ``matched.*``: the analysis record at a training loss every run of its group
  reached (``ReportSpec.matched``),
- ``<field>_vs_<reference>.{wins,losses,compared,gain}``: site by site against a
  same-seed reference run (``ReportSpec.site_wins``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from fedjax_med.studies import grid
from fedjax_med.studies.specs import Matched, Relative, SiteWins, Study, Target


@dataclasses.dataclass
class RunResult:
  """One run's flat metrics.

  Attributes:
    name: the run name.
    axes: axis -> label (incl. ``seed``).
    metrics: flat metric -> float | None.
    curve: test evaluations, dicts with round, accuracy, auc, elapsed_s, bytes_up.
    complete: whether the run wrote ``summary.json``.
    analysis: the sharpness records of ``metrics.jsonl``, in round order.
    per_site: ``"<block>.<metric>"`` -> the per-site values of ``summary.json``'s
      ``sites*`` blocks (``None`` where undefined).
  """

  name: str
  axes: dict
  metrics: dict
  curve: list
  complete: bool
  analysis: list = dataclasses.field(default_factory=list)
  per_site: dict = dataclasses.field(default_factory=dict)


def _flatten(prefix: str, node, out: dict) -> None:
  if isinstance(node, Mapping):
    for k, v in node.items():
      _flatten(f"{prefix}.{k}" if prefix else k, v, out)
  elif isinstance(node, (int, float)) and not isinstance(node, bool):
    out[prefix] = float(node)


def _read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def read_run(sweep_dir: str, run: grid.Run) -> RunResult:
  """One run's metrics (``complete`` False, and only the curve so far, if it has no summary)."""
  d = os.path.join(sweep_dir, run.name)
  flat: dict = {}
  per_site: dict = {}
  summary_path = os.path.join(d, "summary.json")
  complete = os.path.exists(summary_path)
  if complete:
    with open(summary_path) as f:
      summary = json.load(f)
    per_site = {f"{block}.{m}": v["per_site"] for block, value in summary.items()
                if block.startswith("sites") and isinstance(value, Mapping)
                for m, v in value.items() if isinstance(v, Mapping) and "per_site" in v}
    never = (summary.get("sites") or {}).get("never_sampled") or {}
    per_site["never_sampled"] = list(never.get("sites", []))
    clients = summary.pop("clients", None) or {}
    clients.pop("accuracy", None)
    clients.pop("model", None)
    _flatten("", {k: v for k, v in summary.items() if k != "engine"}, flat)
    _flatten("clients", clients, flat)
    if "total_bytes_up" in flat:
      flat["total_mb_up"] = flat["total_bytes_up"] / 1e6
  records = _read_jsonl(os.path.join(d, "metrics.jsonl"))
  curve = [r for r in records if r.get("split") == "test"]
  analysis = [r for r in records if r.get("split") == "analysis"]
  if analysis:
    _flatten("analysis", {k: v for k, v in analysis[-1].items()
                          if k not in ("round", "split", "seconds")}, flat)
    if "test.loss" in flat and "analysis.loss" in flat:
      flat["gap.loss"] = flat["test.loss"] - flat["analysis.loss"]
  return RunResult(run.name, dict(run.axes), flat, curve, complete, analysis, per_site)


def collect(study: Study, sweep_dir: str) -> list[RunResult]:
  """Every run of the study grid (complete or not), with targets and relative metrics."""
  results = [read_run(sweep_dir, r) for r in grid.expand(study)]
  if study.report.target:
    add_targets(results, study.report.target)
  if study.report.relative:
    add_relative(results, study.report.relative)
  if study.report.matched:
    add_matched(results, study.report.matched)
  for wins in study.report.site_wins:
    add_site_wins(results, wins)
  return results


def _key(axes: Mapping, drop) -> tuple:
  return tuple((k, v) for k, v in axes.items() if k not in drop)


def add_targets(results: list[RunResult], target: Target) -> None:
  """Fills ``target.*`` of each run: first evaluation with test accuracy >= ``target.fraction``
  x the mean final accuracy of the reference runs that share the run's other axis labels."""
  reference = target.reference
  drop = set(reference) | {"seed"}
  refs: dict[tuple, list[float]] = {}
  for r in results:
    if r.complete and all(r.axes.get(k) == v for k, v in reference.items()):
      refs.setdefault(_key(r.axes, drop), []).append(r.metrics.get("test.accuracy"))
  for r in results:
    accs = refs.get(_key(r.axes, drop))
    if not accs or not r.complete:
      continue
    goal = target.fraction * float(np.mean(accs))
    r.metrics["target.accuracy"] = goal
    hit = next((x for x in r.curve if x["accuracy"] >= goal), None)
    r.metrics["target.reached"] = 1.0 if hit else 0.0
    for name in ("round", "elapsed_s", "bytes_up"):
      r.metrics[f"target.{name}"] = float(hit[name]) if hit and name in hit else None
    if r.metrics["target.bytes_up"] is not None:
      r.metrics["target.mb_up"] = r.metrics["target.bytes_up"] / 1e6


def add_relative(results: list[RunResult], relative: Relative) -> None:
  """``relative.accuracy`` = acc / acc of the same-seed run with ``axis`` = ``reference``, and
  ``relative.drop`` = reference acc - acc (both paired by seed and the other axes)."""
  axis = {relative.axis}
  refs = {_key(r.axes, axis): r.metrics.get("test.accuracy")
          for r in results if r.complete and r.axes.get(relative.axis) == relative.reference}
  for r in results:
    ref = refs.get(_key(r.axes, axis))
    acc = r.metrics.get("test.accuracy")
    if ref and acc is not None:
      r.metrics["relative.accuracy"] = acc / ref
      r.metrics["relative.drop"] = ref - acc


def add_site_wins(results: list[RunResult], spec: SiteWins) -> None:
  """Fills ``<field>_vs_<reference>.*`` (see :class:`SiteWins`) of every complete run with a
  same-seed reference run (paired by seed and the other axes) and per-site values; sites
  never sampled in either run are left out."""
  axis = {spec.axis}
  refs = {_key(r.axes, axis): r for r in results
          if r.complete and r.axes.get(spec.axis) == spec.reference}
  for r in results:
    ref_run = refs.get(_key(r.axes, axis))
    if not r.complete or ref_run is None:
      continue
    ref = ref_run.per_site.get(f"sites.{spec.metric}")
    own = r.per_site.get(f"{spec.field}.{spec.metric}")
    if ref is None or own is None or len(ref) != len(own):
      continue
    # sites that never trained in either run are not compared (their models are stand-ins)
    skip = set(r.per_site.get("never_sampled", [])) | set(ref_run.per_site.get("never_sampled",
                                                                                   []))
    pairs = [(a, b) for c, (a, b) in enumerate(zip(own, ref, strict=True))
             if a is not None and b is not None and c not in skip]
    diff = np.asarray([a - b for a, b in pairs], np.float64)
    out = {"wins": float((diff > 0).sum()), "losses": float((diff < 0).sum()),
           "compared": float(len(diff)), "gain": float(diff.mean()) if len(diff) else None}
    for k, v in out.items():
      r.metrics[f"{spec.prefix}.{k}"] = v


def add_matched(results: list[RunResult], matched: Matched) -> None:
  """Fills ``matched.*`` (see :class:`Matched`): each run's first analysis record at or
  below the highest best training loss of the complete runs of its group."""
  def key(r):
    return tuple(r.axes.get(a) for a in matched.within)

  def losses(r):
    return [x[matched.loss] for x in r.analysis
            if isinstance(x.get(matched.loss), (int, float)) and np.isfinite(x[matched.loss])]

  level: dict[tuple, float] = {}
  for r in results:
    if r.complete and losses(r):
      level[key(r)] = max(level.get(key(r), -np.inf), min(losses(r)))
  for r in results:
    lv = level.get(key(r))
    if lv is None or not r.complete:
      continue
    hit = next((x for x in r.analysis if isinstance(x.get(matched.loss), (int, float))
                and x[matched.loss] <= lv), None)
    if hit is None:
      continue
    r.metrics["matched.level"] = lv
    _flatten("matched", {k: v for k, v in hit.items() if k not in ("split", "seconds")},
             r.metrics)


def select(results: Sequence[RunResult], where: Mapping[str, str]) -> list[RunResult]:
  """The complete runs whose axes have the labels of ``where``."""
  return [r for r in results if r.complete and all(r.axes.get(k) == v for k, v in where.items())]


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
