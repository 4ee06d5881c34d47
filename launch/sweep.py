"""Runs one config file over several presets and tabulates their summaries.

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
  p.add_argument("--config", required=True, help="configs/<file>.py taking a preset argument")
  p.add_argument("--presets", required=True, help="comma list of presets")
  p.add_argument("--workdir", required=True)
  p.add_argument("--override", action="append", default=[], help="KEY=VALUE for every run")
  p.add_argument("--columns", default=DEFAULT_COLUMNS)
  args = p.parse_args(argv)
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


if __name__ == "__main__":
  sys.exit(main())
