"""Report of a study sweep: CSV + Markdown tables (mean ± 95% CI, paired tests) and PNG figures.

  fedjax-med-report --study=heterogeneity:cpu [--workdir=runs/studies/heterogeneity/cpu] \
      [--output=DIR]

(in a clone also ``python analysis/study_report.py --study=configs/studies/heterogeneity.py:cpu``).
Reads every run of the study grid in WORKDIR (the sweep's directory; default
``runs/studies/<study>/<preset>``), aggregates over seeds, and writes
``<study>.md`` into ``WORKDIR/report/`` (default) or ``--output=DIR`` (the
committed reports: ``--output=docs/results``; a path ending in ``.md`` names the
page itself). Next to it: ``<study>.csv``, ``<study>_runs.csv`` (one row per run)
and ``<study>_paired.csv`` (paired comparisons with a reference, Holm-corrected),
and the figures in ``<study>/``. The page's commands are the sweep's, as recorded
in its ``sweep.json``, and this one. Incomplete runs are listed, not hidden. A
missing or bad study file, or a missing sweep directory, exits with code 2
(fedjax_med/studies/document.py writes the page).
"""

from __future__ import annotations

import argparse
import os
import sys

from fedjax_med.cli.args import flag


def output_path(output: str, workdir: str, study_name: str) -> str:
  """The Markdown path: ``output`` if it ends in ``.md``, else ``output/<study>.md``;
  without ``output``, ``WORKDIR/report/<study>.md`` (beside the sweep)."""
  if output.endswith(".md"):
    return output
  return os.path.join(output or os.path.join(workdir, "report"), f"{study_name}.md")


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  flag(p, "study", required=True, help="STUDY_FILE.py:PRESET or packaged NAME:PRESET")
  flag(p, "workdir", default="", help="sweep directory (default runs/studies/<name>/<preset>)")
  flag(p, "output", default="",
       help="folder for <study>.md, CSVs and figures (default WORKDIR/report), or the .md path")
  args = p.parse_args(argv)
  from fedjax_med.cli import commands, logs

  logs.setup_logging()
  from fedjax_med.analysis import plots
  from fedjax_med.studies import document, loader, runner

  try:
    study, workdir = loader.for_cli(args.study, args.workdir)
  except loader.StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not os.path.isdir(workdir):
    print(f"error: sweep directory {workdir} does not exist; run first: fedjax-med-sweep "
          f"--study={args.study} --workdir={workdir}", file=sys.stderr)
    return 2
  out = output_path(args.output, workdir, study.name)
  ok = plots.available()
  if not ok:
    print(plots.MISSING_MESSAGE)
  typed = sys.argv if argv is None else ["", *argv]
  command = runner.shell(commands.invocation(typed, "fedjax_med.cli.report"))
  result = document.make_report(study, workdir, args.study, out, plots_ok=ok, command=command)
  print(f"wrote {out} ({result['complete']}/{result['total']} runs complete, "
        f"{len(result['figures'])} figures)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
