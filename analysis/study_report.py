"""Report of a study sweep: CSV + Markdown tables (mean ± 95% CI, paired tests) and PNG figures.

  python analysis/study_report.py --study=configs/studies/heterogeneity.py:cpu \
      [--workdir=runs/studies/heterogeneity/cpu] [--output=docs/results/heterogeneity.md]

Reads every run of the study grid in WORKDIR (the sweep's directory; default
``runs/studies/<study>/<preset>``), aggregates over seeds, and writes
``docs/results/<study>.md`` (default), next to it ``<study>.csv``,
``<study>_runs.csv`` (one row per run) and ``<study>_paired.csv`` (paired
comparisons with a reference, Holm-corrected), and the figures into
``docs/results/<study>/``. Incomplete runs are listed, not hidden. A missing or bad study file, or a missing sweep directory, exits with code 2
(fedjax_med/studies/document.py writes the page).
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fedjax_med import cli  # noqa: E402
from fedjax_med.cli import flag as _flag  # noqa: E402


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _flag(p, "study", required=True, help="configs/studies/<name>.py:<preset>")
  _flag(p, "workdir", default="", help="sweep directory (default runs/studies/<name>/<preset>)")
  _flag(p, "output", default="", help="Markdown path (default docs/results/<name>.md)")
  args = p.parse_args(argv)
  cli.setup_logging()
  from fedjax_med.analysis import plots
  from fedjax_med.studies import document, loader

  try:
    study, workdir = loader.for_cli(args.study, args.workdir)
  except loader.StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if not os.path.isdir(workdir):
    print(f"error: sweep directory {workdir} does not exist; run first: python launch/sweep.py "
          f"--study={args.study} --workdir={workdir}", file=sys.stderr)
    return 2
  out = args.output or os.path.join(ROOT, "docs", "results", f"{study.name}.md")
  ok = plots.available()
  if not ok:
    print(plots.MISSING_MESSAGE)
  result = document.make_report(study, workdir, args.study, out, plots_ok=ok)
  print(f"wrote {out} ({result['complete']}/{result['total']} runs complete, "
        f"{len(result['figures'])} figures)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
