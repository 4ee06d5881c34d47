"""Quickstart time to first round: ``launch/main.py`` for one round, in a subprocess.

Reads ``time_to_first_round_s`` from the run's ``summary.json`` (measured by
the trainer from the start of ``train_and_evaluate``) and the wall time of the
whole process (imports, eval, checkpoint). Uses the official PneumoniaMNIST
file when ``../shared/data/medmnist`` has it, else a synthetic one. Needs
ml_collections, clu and absl (the GPU machine lacks them: then it is skipped).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from bench import harness
from fedjax_med.data import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOWER_NOTE = "Flower ~10-13 s measured start-up (STYLE.md §11)"


def _data_flags(tmp: str, env: dict) -> tuple[list[str], str]:
  """Flags for the quickstart's data and where it came from; may set ``MEDMNIST_ROOT``."""
  real = os.path.join(os.path.dirname(_REPO), "shared", "data", "medmnist")
  if os.path.exists(os.path.join(real, "pneumoniamnist.npz")):
    env["MEDMNIST_ROOT"] = real
    return [], "official"
  root = os.path.join(tmp, "data")
  synthetic.write_npz(
    os.path.join(root, "pneumoniamnist.npz"),
    name="pneumoniamnist", n_train=4708, n_val=524, n_test=624,
  )
  flags = [f"--config.data.root={root}", "--config.data.verify_md5=False",
           "--config.data.download=False"]
  return flags, "synthetic"


def first_round(timeout_s: int = 300) -> dict:
  """``{"time_to_first_round_s", "process_wall_s", "data"}``, or ``{"skipped"|"error": why}``."""
  missing = [m for m in ("ml_collections", "clu", "absl") if importlib.util.find_spec(m) is None]
  if missing:
    return {"skipped": f"missing {', '.join(missing)}"}
  env = dict(os.environ)
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  with tempfile.TemporaryDirectory() as tmp:
    flags, source = _data_flags(tmp, env)
    workdir = os.path.join(tmp, "run")
    cmd = [
      sys.executable, os.path.join(_REPO, "launch", "main.py"),
      f"--config={os.path.join(_REPO, 'configs', 'quickstart.py')}", f"--workdir={workdir}",
      "--config.fl.rounds=1", "--config.log.progress=none", *flags,
    ]
    wall, proc = harness.time_call(
      lambda: subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=_REPO),
      block=lambda x: x,
    )
    if proc.returncode != 0:
      return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  return {
    "time_to_first_round_s": summary["time_to_first_round_s"],
    "process_wall_s": wall,
    "data": source,
  }


def describe(qs: dict) -> str:
  """One line for the human report."""
  if "time_to_first_round_s" not in qs:
    return f"Quickstart time to first round: {qs}"
  return (
    f"Quickstart time to first round: {qs['time_to_first_round_s']:.1f} s (from "
    f"train_and_evaluate start, {qs['data']} data; whole 1-round process incl. imports, "
    f"eval, checkpoint: {qs['process_wall_s']:.1f} s) vs {FLOWER_NOTE}"
  )
