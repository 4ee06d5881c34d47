"""The study report: ``<study>.md``, its CSVs and ``<study>/*.png`` (in ``SWEEP/report/``,
or ``docs/results/`` for the committed ones).

``make_report`` collects the sweep's runs (``results.py``), aggregates them over
seeds (``tables.py``), compares each row with its reference row (``paired.py``),
draws the figures (``figures.py``) and writes one Markdown page: what was run
and how, the table, the paired comparisons, the target definition, the
comparison with a published baseline, loss landscapes, figures, missing metric
values and the incomplete runs with the reason each stopped. Next to it:
``<study>.csv`` (the table), ``<study>_runs.csv`` (one row per run) and
``<study>_paired.csv`` (the comparisons). Every sentence the page generates about
a difference is conditional on its test.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Sequence

from fedjax_med.studies import figures, grid, paired, results, stats, tables
from fedjax_med.studies.specs import Paired, Study

REPORT_CLI = "fedjax-med-report"  # named in a reconstructed report command


def _description(text: str) -> str:
  """The study docstring without its command lines (the report prints them itself)."""
  keep = [line for line in text.strip().splitlines()
          if not line.startswith("  python") and not line.startswith("      ")]
  return "\n".join(keep).strip()


def machine() -> str:
  """Host, cores, OS, jax version and backend: where the numbers come from."""
  import jax

  dev = jax.devices()[0]
  return (f"{platform.node() or 'host'}: {os.cpu_count()} CPU cores, {platform.system()} "
          f"{platform.machine()}, jax {jax.__version__} on {dev.platform}")


def sweep_commands(sweep_dir: str, spec: str) -> list[str]:
  """The sweep's command lines as recorded in ``SWEEP/sweep.json`` (``invocations``); a
  reconstructed one, marked, for a sweep that recorded none."""
  try:
    with open(os.path.join(sweep_dir, "sweep.json")) as f:
      recorded = [i["command"] for i in json.load(f).get("invocations", [])]
  except (OSError, ValueError, KeyError, TypeError):
    recorded = []
  return recorded or [f"fedjax-med-sweep --study={spec} --workdir={sweep_dir}  "
                      "# not recorded in sweep.json; the usual command"]


def _header(study: Study, spec: str, sweep_dir: str, rel: str, complete: int, total: int,
            commands: list[str]):
  return [f"# Study: {study.name} (preset `{study.preset}`)", "",
          f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {machine()}; "
          f"{complete} of {total} runs complete. Every number below comes from the "
          f"`{study.preset}` preset.", "",
          "## What was run", "", _description(study.description), "",
          "Commands (the sweep's as recorded in its `sweep.json`, then this report's):", "",
          "```", *commands, "```", "",
          "Tables give the mean ± 95% confidence half-width (Student t) over seeds; "
          "n = complete runs, and `(n=k)` marks a mean over the k runs that have the metric. "
          f"CSV: [`{rel}.csv`]({rel}.csv) (this table), [`{rel}_runs.csv`]({rel}_runs.csv) "
          f"(one row per run and seed), [`{rel}_paired.csv`]({rel}_paired.csv) (paired "
          "comparisons). Wall times come from runs made "
          "with the commands above (with `--jobs` > 1, runs share the machine), so they "
          "compare within this report only.", ""]


def _target(study: Study) -> list[str]:
  target = study.report.target
  if not target:
    return []
  ref = ", ".join(f"{k}={v}" for k, v in target.reference.items())
  return [f"Target: {target.fraction:.0%} of the mean final test accuracy of "
          f"the {ref} runs with the same other settings; *rounds / time / MB to target* are "
          "means over the runs that reached it (*reached* counts them).", ""]


def _paired(specs: Sequence[Paired], runs: Sequence[results.RunResult], by: Sequence[str],
            metrics: Sequence[str], order) -> tuple[list[str], list[paired.Comparison]]:
  """The comparisons sections under the table (one per family), and all comparisons."""
  md, comparisons = [], []
  for spec in specs:
    m, c = _paired_family(spec, runs, by, metrics, order, titled=len(specs) > 1)
    md, comparisons = md + m, comparisons + c
  return md, comparisons


def _paired_family(spec: Paired, runs: Sequence[results.RunResult], by: Sequence[str],
                   metrics: Sequence[str], order, titled: bool):
  comparisons = paired.compare(runs, by, spec, paired.metrics_of(spec, metrics), order)
  if not comparisons:
    return [], []
  ref = ", ".join(f"{k}={v}" for k, v in spec.reference.items())
  where = ", ".join(f"{k}={v}" for k, v in spec.where.items())
  title = f" (rows with {where})" if where and titled else ""
  return [f"### Paired differences against {ref if titled else 'the reference'}{title}", "",
          f"Each row is compared with the {ref} row that has its other labels, run by run: "
          "runs are paired by seed (and every other axis label); *difference* is the mean "
          "over pairs of row − reference ± the 95% Student-t half-width; *paired t p* and "
          "*Wilcoxon p* (signed-rank, zero differences dropped, exact for small n) are "
          "two-sided; *Holm p* adjusts the t-test p-values for all tested comparisons of this "
          f"{'family' if titled else 'table'} (Holm–Bonferroni step-down); a row is "
          f"significant when Holm p ≤ {spec.alpha:g}. "
          "*pairs* counts the pairs used and, in brackets, runs without a same-seed partner "
          "(unpaired) and pairs without the metric (missing). With n pairs the exact two-sided "
          "Wilcoxon p-value cannot go below 2 / 2^n (0.25 for 3, 0.0625 for 5), so the verdict "
          "rests on the t-test; only large, consistent differences survive Holm.",
          "", paired.to_markdown(comparisons, by, spec.alpha), "",
          paired.summary(comparisons, spec.alpha), ""], comparisons


def _baseline(study: Study, runs: Sequence[results.RunResult], by: Sequence[str]) -> list[str]:
  """Our runs against a published number: one-sample t-tests of the seeds against it,
  Holm-corrected over ACC and AUC; a difference is called one only when significant."""
  paper = study.report.baseline
  if not paper:
    return []
  where = {k: v for k, v in paper.where.items() if k in by}
  ours = results.select(runs, where)
  if not ours:
    return []
  published = {"test.accuracy": paper.accuracy, "test.auc": paper.auc}
  tests = {m: stats.paired_test([v - x for r in ours if (v := r.metrics.get(m)) is not None])
           for m, x in published.items()}
  tested = [m for m, t in tests.items() if t.t_p is not None]
  holm = dict(zip(tested, stats.holm([tests[m].t_p for m in tested]), strict=True))
  parts = []
  for m, name in (("test.accuracy", "ACC"), ("test.auc", "AUC")):
    t, p = tests[m], holm.get(m)
    if t.n == 0:
      parts.append(f"{name}: no complete run")
    elif p is not None and p <= 0.05:
      parts.append(f"{name} {t.mean:+.3f} ± {t.ci:.3f} (one-sample t-test, Holm p "
                   f"{paired.fmt_p(p)}: significant at 0.05)")
    else:
      why = f"Holm p {paired.fmt_p(p)}: not significant" if p is not None else (
          f"no test: {t.note}")
      parts.append(f"{name} {t.mean:+.3f} ({why}; no difference is claimed)")
  ours_txt = ", ".join(f"{k}={v}" for k, v in where.items())
  acc, auc = (tables.fmt(stats.mean_ci([r.metrics.get(m) for r in ours])) for m in published)
  return ["## Against the published baseline", "",
          f"{paper.source}: ACC {paper.accuracy:.3f}, AUC {paper.auc:.3f}. Ours ({ours_txt}, "
          f"{len(ours)} seeds): ACC {acc}, AUC {auc}. "
          f"Ours − published: {'; '.join(parts)}. The published number is taken as exact "
          "(its own seed spread is not known here).", ""]


def _missing(runs: Sequence[results.RunResult], metrics: Sequence[str]) -> list[str]:
  counts = tables.missing(runs, metrics)
  if not counts:
    return []
  return ["## Missing metric values", "",
          "Complete runs whose `summary.json` lacks a reported metric (left out of its means "
          "and pairs; for `target.*`: runs that never reached the target).", "",
          *[f"- `{m}`: missing in {k} of {n} complete runs" for m, (k, n) in counts.items()], ""]


def _landscape(land_md: str) -> list[str]:
  if not land_md:
    return []
  return ["## Loss landscapes (seed 0)", "",
          "A = the first run of the step, B = the second (centralized). Losses on a fixed "
          "500-example training subset, eval mode; directions filter-normalized "
          "(Li et al. 2018), so *loss at ±span* is the larger loss one filter-normalized unit "
          "away from A along a random direction (flatness at a common scale). *Barrier* = the "
          "largest excess of the loss on the straight line (1-t)A + tB over the line "
          "joining its end values (0: no barrier).", "", land_md, ""]


def _figures(written: Sequence[tuple[str, str]], rel: str) -> list[str]:
  if not written:
    return []
  doc = ["## Figures", ""]
  for title, name in written:
    doc += [f"**{title}**", "", f"![{title}]({rel}/{name})", ""]
  return doc


def _incomplete(runs: Sequence[results.RunResult], sweep_dir: str) -> list[str]:
  missing = [r.name for r in runs if not r.complete]
  if not missing:
    return []
  return ["## Incomplete runs", "",
          "Not in the tables above; the reason is the run's last `error:` log line.", "",
          *[f"- `{m}`: {results.run_error(sweep_dir, m)}" for m in missing], ""]


def make_report(study: Study, sweep_dir: str, spec: str, out_md: str,
                plots_ok: bool = True, command: str | None = None) -> dict:
  """Writes ``out_md``, ``<stem>.csv``, ``<stem>_runs.csv``, ``<stem>_paired.csv`` and
  ``<stem>/*.png``.

  Args:
    study: the study.
    sweep_dir: its sweep directory.
    spec: the ``--study`` argument (``FILE:PRESET``), quoted in the commands.
    out_md: the Markdown path.
    plots_ok: draw figures (matplotlib is installed).
    command: the report's own command line (default: a reconstructed one).

  Returns:
    ``{"rows", "comparisons", "figures", "complete", "total"}``: the table rows, the
    paired comparisons, the ``(title, file)`` of each figure, complete and total run counts.
  """
  runs = results.collect(study, sweep_dir)
  rep = study.report
  order = grid.axis_order(study)
  by = list(rep.table or [a for a in order if a != "seed"])
  metrics = list(rep.metrics)
  if rep.relative and "relative.drop" not in metrics:
    metrics += ["relative.accuracy", "relative.drop"]
  rows = tables.aggregate(runs, by, metrics, order)
  paired_md, comparisons = _paired(rep.paired_specs(), runs, by, metrics, order)
  stem = os.path.splitext(out_md)[0]
  os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
  run_metrics = list(dict.fromkeys(metrics + [c.metric for c in comparisons]))
  for suffix, text in ((".csv", tables.to_csv(rows, by, metrics)),
                       ("_runs.csv", tables.runs_to_csv(runs, list(order), run_metrics)),
                       ("_paired.csv", paired.to_csv(comparisons, by))):
    with open(stem + suffix, "w") as f:
      f.write(text)
  written, land_md = [], ""
  if plots_ok:
    os.makedirs(stem, exist_ok=True)
    written = figures.figures(study, runs, stem, study.preset)
    extra, land_md = figures.landscapes(study, sweep_dir, stem, study.preset)
    written += extra
  complete = sum(r.complete for r in runs)
  rel = os.path.basename(stem)
  command = command or (f"{REPORT_CLI} --study={spec} --workdir={sweep_dir} "
                        f"--output={os.path.dirname(out_md) or '.'}")
  doc = (_header(study, spec, sweep_dir, rel, complete, len(runs),
                 sweep_commands(sweep_dir, spec) + [command]) + _target(study) +
         ["## Results", "", tables.to_markdown(rows, by, metrics), ""] + paired_md +
         _baseline(study, runs, by) + _landscape(land_md) + _figures(written, rel) +
         _missing(runs, run_metrics) + _incomplete(runs, sweep_dir))
  with open(out_md + ".tmp", "w") as f:
    f.write("\n".join(doc))
  os.replace(out_md + ".tmp", out_md)
  return {"rows": rows, "comparisons": comparisons, "figures": written, "complete": complete,
          "total": len(runs)}
