"""Runs a study grid (resumable), or one config file over several presets.

Studies (configs/studies/*.py, see fedjax_med/sweep.py):

  python launch/sweep.py --study=configs/studies/heterogeneity.py:cpu [--jobs=2] \
      [--workdir=runs/studies/heterogeneity/cpu] [--only=REGEX] [--dry_run]

runs every incomplete run of the grid, each in its own workdir (finished runs
are skipped, interrupted ones resume), then the study's post steps, and writes
``WORKDIR/sweep.json``; ``python analysis/report.py --study=...`` then makes the
report. Presets of one config file:

  python launch/sweep.py --config=configs/comm.py --presets=none,q8,topk_ef --workdir=runs/comm \
      [--override=fl.rounds=10 ...] [--columns=test.accuracy,total_bytes_up]

Each preset runs ``launch/main.py --config=FILE:PRESET --workdir=WORKDIR/PRESET`` in its own
process (so a finished preset is kept and a rerun resumes or skips it), then
``WORKDIR/sweep.json`` and a markdown table collect the chosen summary fields. A
failed preset (e.g. a diverged run, exit code 1) is reported and the sweep goes
on; the sweep then exits with 1.
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_COLUMNS = ("test.accuracy,test.auc,rounds_completed,rounds_to_target,"
                   "bytes_up_to_target,total_bytes_up,wall_time_s")


def field(summary: dict, path: str):
  node = summary
  for part in path.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--study", default="", help="configs/studies/<name>.py:<preset>")
  p.add_argument("--jobs", type=int, default=1, help="runs at once (study mode)")
  p.add_argument("--only", default="", help="study mode: only runs whose name matches REGEX")
  p.add_argument("--dry_run", action="store_true", help="study mode: print the commands only")
  p.add_argument("--config", help="configs/<file>.py taking a preset argument")
  p.add_argument("--presets", help="comma list of presets")
  p.add_argument("--workdir", default="")
  p.add_argument("--override", action="append", default=[], help="KEY=VALUE for every run (study mode: after the grid's own; for smoke tests)")
  p.add_argument("--columns", default=DEFAULT_COLUMNS)
  args = p.parse_args(argv)
  if args.study:
    return run_study(args)
  if not (args.config and args.presets and args.workdir):
    p.error("give --study=FILE:PRESET, or --config, --presets and --workdir")
  rows, failed = [], []
  for preset in args.presets.split(","):
    workdir = os.path.join(args.workdir, preset)
    if not os.path.exists(os.path.join(workdir, "summary.json")):
      cmd = [sys.executable, os.path.join(ROOT, "launch", "main.py"),
             f"--config={args.config}:{preset}", f"--workdir={workdir}",
             "--config.log.progress=lines"] + [f"--config.{o}" for o in args.override]
      print("$", " ".join(cmd), flush=True)
      rc = subprocess.run(cmd).returncode
      if rc != 0:  # keep going: one diverged preset should not hide the others
        print(f"error: preset {preset!r} failed with exit code {rc}", file=sys.stderr)
        failed.append(preset)
        rows.append({"preset": preset, "failed": f"exit code {rc}"})
        continue
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    rows.append({"preset": preset, **{c: field(summary, c) for c in args.columns.split(",")}})
  os.makedirs(args.workdir, exist_ok=True)
  with open(os.path.join(args.workdir, "sweep.json"), "w") as f:
    json.dump(rows, f, indent=2)
  cols = ["preset"] + args.columns.split(",")
  print("| " + " | ".join(cols) + " |")
  print("|" + "---|" * len(cols))
  for r in rows:
    if "failed" in r:
      print(f"| {r['preset']} | failed: {r['failed']} |")
      continue
    cells = [f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in cols]
    print("| " + " | ".join(cells) + " |")
  return 1 if failed else 0


def run_study(args) -> int:
  sys.path.insert(0, ROOT)
  from fedjax_med import sweep

  bad = [o for o in args.override if "=" not in o]
  if bad:
    print(f"error: --override needs KEY=VALUE, got {bad[0]!r}", file=sys.stderr)
    return 2
  try:
    study = sweep.load_checked(args.study)
  except sweep.StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  workdir = args.workdir or sweep.default_workdir(study)
  extra = dict(o.split("=", 1) for o in args.override)
  manifest = sweep.run_all(study, workdir, jobs=args.jobs, dry_run=args.dry_run, only=args.only,
                           extra=extra)
  if args.dry_run:
    return 0
  bad = sweep.failed(manifest)
  print(f"wrote {os.path.join(workdir, 'sweep.json')}; report: python analysis/report.py "
        f"--study={args.study} --workdir={workdir}")
  if bad:
    print(f"error: {len(bad)} failed: {', '.join(bad)} (see {workdir}/logs/)", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
