"""Quickstart time to first round, cold and warm: ``launch/main.py`` twice, in subprocesses.

Reads ``time_to_first_round_s`` from the run's ``summary.json`` (measured by
the trainer from the start of ``train_and_evaluate``) and the wall time of the
whole process (imports, eval, checkpoint); the first process compiles into an
empty persistent compilation cache, the second loads from it. Uses the official PneumoniaMNIST
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


def _quickstart(workdir: str, flags: list[str], env: dict, rounds: int, timeout_s: int):
  """(process wall seconds, summary.json) of one quickstart process of ``rounds`` rounds."""
  cmd = [
    sys.executable, os.path.join(_REPO, "launch", "main.py"),
    f"--config={os.path.join(_REPO, 'configs', 'quickstart.py')}", f"--workdir={workdir}",
    f"--config.fl.rounds={rounds}", "--config.log.progress=none", *flags,
  ]
  wall, proc = harness.time_call(
    lambda: subprocess.run(
      cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=_REPO),
    block=lambda x: x,
  )
  if proc.returncode != 0:
    raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}")
  with open(os.path.join(workdir, "summary.json")) as f:
    return wall, json.load(f)


def first_round(timeout_s: int = 300, rounds: int = 1) -> dict:
  """The quickstart cold then warm: two processes of ``rounds`` rounds sharing a new, empty
  compilation cache (``config.compile_cache``), so the first compiles everything and the
  second loads it.

  Returns ``{"time_to_first_round_s", "process_wall_s"}`` (cold) and the same with
  ``_warm``, the ``compile`` stats of each, ``rounds`` and ``data``; or
  ``{"skipped"|"error": why}``.
  """
  missing = [m for m in ("ml_collections", "clu", "absl") if importlib.util.find_spec(m) is None]
  if missing:
    return {"skipped": f"missing {', '.join(missing)}"}
  env = dict(os.environ)
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  with tempfile.TemporaryDirectory() as tmp:
    flags, source = _data_flags(tmp, env)
    flags.append(f"--config.compile_cache={os.path.join(tmp, 'xla_cache')}")
    out = {"rounds": rounds, "data": source}
    try:
      for tag in ("", "_warm"):
        wall, summary = _quickstart(os.path.join(tmp, "run" + tag), flags, env, rounds,
                                    timeout_s)
        out.update({f"time_to_first_round_s{tag}": summary["time_to_first_round_s"],
                    f"process_wall_s{tag}": wall, f"compile{tag}": summary.get("compile")})
    except (RuntimeError, subprocess.TimeoutExpired) as e:
      return {"error": str(e)}
  return out


def describe(qs: dict) -> str:
  """Lines for the human report."""
  if "time_to_first_round_s" not in qs:
    return f"Quickstart time to first round: {qs}"
  lines = [
    f"Quickstart ({qs['data']} data, {qs['rounds']} round(s)), cold vs warm compilation cache:",
    f"  time to first round: {qs['time_to_first_round_s']:.1f} s cold, "
    f"{qs['time_to_first_round_s_warm']:.1f} s warm (from train_and_evaluate start)",
    f"  whole process (imports, data, rounds, eval, checkpoints): {qs['process_wall_s']:.1f} s "
    f"cold, {qs['process_wall_s_warm']:.1f} s warm",
    f"  vs {FLOWER_NOTE}",
  ]
  return "\n".join(lines)
