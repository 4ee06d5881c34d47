"""Runs a study grid (resumable): every incomplete run in its own process, then the post steps.

  fedjax-med-sweep --study=heterogeneity:cpu [--jobs=2] \
      [--workdir=runs/studies/heterogeneity/cpu] [--only=REGEX] [--dry_run] \
      [--vectorize_seeds=auto|yes|no] [--override=KEY=VALUE ...]

(in a clone also ``python launch/sweep.py --study=configs/studies/heterogeneity.py:cpu``).
``--study`` is a study file and preset, or a packaged study name
(``configs/studies/<name>.py`` shipped as ``fedjax_med.configs``: ``heterogeneity:cpu``).
Each run is ``python -m fedjax_med.cli.train`` in its own workdir
``WORKDIR/<axis-label+...+seed-N>``: finished runs are skipped, interrupted ones
resume. ``WORKDIR/sweep.json`` records each run's command and status and this
command line; ``fedjax-med-report --study=...`` then makes the report (in
``WORKDIR/report/``). ``--override`` adds ``--config.KEY=VALUE`` to every run after
the grid's own (smoke tests in a scratch ``--workdir``). ``--vectorize_seeds``:
runs that differ only in consecutive seeds train in one process, vectorized in one
compiled round, each in its own workdir as before (``auto``: where it was measured
faster: on a GPU, and on CPU with ``--jobs=1``; with ``--jobs=2`` on 2 cores separate
processes were faster).

Exit codes: 0 all runs and post steps done, 1 some failed (the others still
ran), 2 a bad study file or ``--override``.
"""

from __future__ import annotations

import argparse
import os
import sys

from fedjax_med.cli.args import flag


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  flag(p, "study", required=True, help="STUDY_FILE.py:PRESET or packaged NAME:PRESET")
  flag(p, "jobs", type=int, default=1, help="runs at once")
  flag(p, "only", default="", help="only runs whose name matches REGEX")
  flag(p, "dry_run", action="store_true", help="print the commands only")
  flag(p, "workdir", default="", help="default runs/studies/<name>/<preset>")
  flag(p, "vectorize_seeds", default="auto", choices=("auto", "yes", "no"),
       help="train runs that differ only in consecutive seeds in one process, vectorized "
       "(auto: where measured faster: on a GPU, or on CPU with --jobs=1; bench/many_runs.py)")
  flag(p, "override", action="append", default=[],
       help="KEY=VALUE for every run, after the grid's own (for smoke tests)")
  args = p.parse_args(argv)
  from fedjax_med.cli import commands
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
  typed = sys.argv if argv is None else ["", *argv]
  manifest = runner.run_all(study, workdir, jobs=args.jobs, dry_run=args.dry_run,
                            only=args.only, extra=extra, vectorize_seeds=args.vectorize_seeds,
                            invocation=commands.invocation(typed, "fedjax_med.cli.sweep"))
  if args.dry_run:
    return 0
  failed = runner.failed(manifest)
  print(f"wrote {os.path.join(workdir, 'sweep.json')}; report: fedjax-med-report "
        f"--study={args.study} --workdir={workdir}")
  if failed:
    print(f"error: {len(failed)} failed: {', '.join(failed)} (see {workdir}/logs/)",
          file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
