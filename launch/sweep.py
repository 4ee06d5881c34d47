"""Runs a study grid (resumable): every incomplete run in its own process, then the post steps.

  python launch/sweep.py --study=configs/studies/heterogeneity.py:cpu [--jobs=2] \
      [--workdir=runs/studies/heterogeneity/cpu] [--only=REGEX] [--dry_run] \
      [--override=KEY=VALUE ...]

A study file (configs/studies/*.py, see fedjax_med/studies/) defines the grid.
Each run is ``launch/main.py`` in its own workdir ``WORKDIR/<axis-label+...+seed-N>``:
finished runs are skipped, interrupted ones resume. ``WORKDIR/sweep.json``
records each run's command and status; ``python analysis/study_report.py
--study=...`` then makes the report. ``--override`` adds ``--config.KEY=VALUE``
to every run after the grid's own (smoke tests in a scratch ``--workdir``).

Exit codes: 0 all runs and post steps done, 1 some failed (the others still
ran), 2 a bad study file or ``--override``.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--study", required=True, help="configs/studies/<name>.py:<preset>")
  p.add_argument("--jobs", type=int, default=1, help="runs at once")
  p.add_argument("--only", default="", help="only runs whose name matches REGEX")
  p.add_argument("--dry_run", action="store_true", help="print the commands only")
  p.add_argument("--workdir", default="", help="default runs/studies/<name>/<preset>")
  p.add_argument("--override", action="append", default=[],
                 help="KEY=VALUE for every run, after the grid's own (for smoke tests)")
  args = p.parse_args(argv)
  sys.path.insert(0, ROOT)
  from fedjax_med.studies import loader, runner

  bad = [o for o in args.override if "=" not in o]
  if bad:
    print(f"error: --override needs KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
    return 2
  try:
    study, workdir = loader.for_cli(args.study, args.workdir)
  except loader.StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  extra = dict(o.split("=", 1) for o in args.override)
  manifest = runner.run_all(study, workdir, jobs=args.jobs, dry_run=args.dry_run,
                            only=args.only, extra=extra)
  if args.dry_run:
    return 0
  failed = runner.failed(manifest)
  print(f"wrote {os.path.join(workdir, 'sweep.json')}; report: python analysis/study_report.py "
        f"--study={args.study} --workdir={workdir}")
  if failed:
    print(f"error: {len(failed)} failed: {', '.join(failed)} (see {workdir}/logs/)",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
