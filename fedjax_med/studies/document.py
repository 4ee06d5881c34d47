"""The study report: ``docs/results/<study>.md``, ``<study>.csv`` and ``<study>/*.png``.

``make_report`` collects the sweep's runs (``results.py``), aggregates them over
seeds (``tables.py``), draws the figures (``figures.py``) and writes one
Markdown page: what was run and how, the table, the target definition, the
comparison with a published baseline, loss landscapes, figures and the
incomplete runs with the reason each stopped.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence

from fedjax_med.studies import figures, grid, results, tables
from fedjax_med.studies.specs import Study

STUDY_REPORT = "analysis/study_report.py"  # the CLI the report names in its commands


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


def _header(study: Study, spec: str, sweep_dir: str, rel: str, complete: int, total: int):
  return [f"# Study: {study.name} (preset `{study.preset}`)", "",
          f"Generated {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} on {machine()}; "
          f"{complete} of {total} runs complete. Every number below comes from the "
          f"`{study.preset}` preset.", "",
          "## What was run", "", _description(study.description), "", "Commands:", "", "```",
          f"python launch/sweep.py --study={spec} --jobs=2 --workdir={sweep_dir}",
          f"python {STUDY_REPORT} --study={spec} --workdir={sweep_dir}", "```", "",
          "Tables give the mean ± 95% confidence half-width (Student t) over seeds; "
          f"n = complete runs. CSV: [`{rel}.csv`]({rel}.csv). Wall times come from runs made "
          "with the command above (`--jobs=2`: two runs share the machine), so they compare "
          "within this report only.", ""]


def _target(study: Study) -> list[str]:
  target = study.report.target
  if not target:
    return []
  ref = ", ".join(f"{k}={v}" for k, v in target.reference.items())
  return [f"Target: {target.fraction:.0%} of the mean final test accuracy of "
          f"the {ref} runs with the same other settings; *rounds / time / MB to target* are "
          "means over the runs that reached it (*reached* counts them).", ""]


def _baseline(study: Study, rows: Sequence[dict], by: Sequence[str]) -> list[str]:
  paper = study.report.baseline
  if not paper:
    return []
  where = {k: v for k, v in paper.where.items() if k in by}
  ours = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
  if not ours:
    return []
  acc, auc = ours[0]["test.accuracy"], ours[0]["test.auc"]
  return ["## Against the published baseline", "",
          f"{paper.source}: ACC {paper.accuracy:.3f}, AUC {paper.auc:.3f}. "
          f"Ours ({', '.join(f'{k}={v}' for k, v in where.items())}): "
          f"ACC {tables.fmt(acc)}, AUC {tables.fmt(auc)}; difference "
          f"{acc[0] - paper.accuracy:+.3f} ACC, {auc[0] - paper.auc:+.3f} AUC.", ""]


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
                plots_ok: bool = True) -> dict:
  """Writes ``out_md``, ``<stem>.csv`` and ``<stem>/*.png``.

  Args:
    study: the study.
    sweep_dir: its sweep directory.
    spec: the ``--study`` argument (``FILE:PRESET``), quoted in the commands.
    out_md: the Markdown path.
    plots_ok: draw figures (matplotlib is installed).

  Returns:
    ``{"rows", "figures", "complete", "total"}``: the table rows, the
    ``(title, file)`` of each figure, complete and total run counts.
  """
  runs = results.collect(study, sweep_dir)
  rep = study.report
  order = grid.axis_order(study)
  by = list(rep.table or [a for a in order if a != "seed"])
  metrics = list(rep.metrics)
  if rep.relative and "relative.drop" not in metrics:
    metrics += ["relative.accuracy", "relative.drop"]
  rows = tables.aggregate(runs, by, metrics, order)
  stem = os.path.splitext(out_md)[0]
  os.makedirs(os.path.dirname(os.path.abspath(out_md)), exist_ok=True)
  with open(stem + ".csv", "w") as f:
    f.write(tables.to_csv(rows, by, metrics))
  written, land_md = [], ""
  if plots_ok:
    os.makedirs(stem, exist_ok=True)
    written = figures.figures(study, runs, stem, study.preset)
    extra, land_md = figures.landscapes(study, sweep_dir, stem, study.preset)
    written += extra
  complete = sum(r.complete for r in runs)
  rel = os.path.basename(stem)
  doc = (_header(study, spec, sweep_dir, rel, complete, len(runs)) + _target(study) +
         ["## Results", "", tables.to_markdown(rows, by, metrics), ""] +
         _baseline(study, rows, by) + _landscape(land_md) + _figures(written, rel) +
         _incomplete(runs, sweep_dir))
  with open(out_md + ".tmp", "w") as f:
    f.write("\n".join(doc))
  os.replace(out_md + ".tmp", out_md)
  return {"rows": rows, "figures": written, "complete": complete, "total": len(runs)}
