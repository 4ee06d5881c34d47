"""Studies as grids of config overrides: expansion, run names, completion and running.

A study file (``configs/studies/<name>.py``) has ``get_study(preset) -> Study``.
A :class:`Study` names a base config and one or more *grids*; each grid is an
ordered mapping ``axis -> {label: overrides}`` whose Cartesian product (times
``seeds``) gives runs, and the union of the grids (deduplicated by run name)
is the study. Each run is ``launch/main.py --config=BASE --workdir=SWEEP/RUN
--config.KEY=VALUE ...`` in its own process and workdir, so finished runs are
kept: a run is complete when its ``summary.json`` exists, and rerunning the
sweep skips it (an interrupted run resumes from its last checkpoint).

``post`` steps (e.g. a loss-landscape scan of two finished runs) run after the
grid, each skipped when its output file exists.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from fedjax_med.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclasses.dataclass(frozen=True)
class Post:
  """A command run once after the grid: ``argv`` (a script under the repo root and its flags).

  ``{sweep}`` in ``argv`` and ``output`` is the sweep directory; ``output`` is the
  file whose existence marks the step as done. ``needs`` lists the run names it reads.
  """

  name: str
  argv: tuple[str, ...]
  output: str
  needs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  preset: str
  base: str  # config spec for launch/main.py, e.g. "configs/quickstart.py"
  grids: tuple[Mapping[str, Mapping[str, Mapping]], ...]
  seeds: tuple[int, ...] = (0, 1, 2)
  fixed: Mapping = dataclasses.field(default_factory=dict)  # overrides for every run
  post: tuple[Post, ...] = ()
  report: Mapping = dataclasses.field(default_factory=dict)  # options for analysis/report.py
  description: str = ""


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  axes: dict  # axis -> label, including "seed"
  overrides: dict  # dotted config key -> value (fixed, then each axis in order, then seed)


def run_name(axes: Mapping[str, str]) -> str:
  return "+".join(f"{k}-{v}" for k, v in axes.items())


def expand(study: Study) -> list[Run]:
  """The study's runs in grid order; a run named twice (grids overlapping) appears once.

  Raises:
    ValueError: an axis label that is not a safe path component, or the same run
      name with different overrides in two grids.
  """
  runs: dict[str, Run] = {}
  if not study.seeds:
    raise ValueError(f"study {study.name!r} has no seeds")
  for grid in study.grids:
    axes = list(grid.items())
    for axis, labels in axes:
      for label in labels:
        if not _LABEL.fullmatch(str(label)) or not _LABEL.fullmatch(axis):
          raise ValueError(f"axis {axis!r} label {label!r}: use letters, digits, '_', '.', '-'")
    for combo in itertools.product(*[list(labels.items()) for _, labels in axes]):
      for seed in study.seeds:
        names = {axis: label for (axis, _), (label, _) in zip(axes, combo, strict=True)}
        names["seed"] = str(seed)
        overrides = dict(study.fixed)
        for _, (_, o) in zip(axes, combo, strict=True):
          overrides.update(o)
        overrides["seed"] = seed
        run = Run(run_name(names), names, overrides)
        if run.name in runs and runs[run.name].overrides != overrides:
          raise ValueError(f"run {run.name} appears in two grids with different overrides")
        runs[run.name] = run
  return list(runs.values())


def command(study: Study, run: Run, sweep_dir: str, extra: Mapping | None = None) -> list[str]:
  """``launch/main.py`` argv of ``run``; ``extra`` overrides come last (smoke tests)."""
  overrides = {**run.overrides, **(extra or {})}
  return [sys.executable, os.path.join(ROOT, "launch", "main.py"), f"--config={study.base}",
          f"--workdir={os.path.join(sweep_dir, run.name)}", "--config.log.progress=lines"] + [
              f"--config.{k}={v}" for k, v in overrides.items()]  # str() parses back


def shell(argv: Sequence[str]) -> str:
  """``argv`` as a copy-pasteable line relative to the repository root."""
  parts = []
  for a in argv:
    a = "python" if a == sys.executable else a.replace(ROOT + os.sep, "")
    parts.append(a if re.match(r"^[\w@%+=:,./-]+$", a) else "'" + a.replace("'", "'\\''") + "'")
  return " ".join(parts)


def is_complete(sweep_dir: str, run: Run) -> bool:
  return os.path.exists(os.path.join(sweep_dir, run.name, "summary.json"))


def load_study(spec: str) -> Study:
  """``configs/studies/x.py:preset`` -> the Study (the file's ``get_study(preset)``)."""
  import importlib.util

  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"study file {path!r} does not exist (see configs/studies/)")
  module_name = "_study_" + re.sub(r"\W", "_", os.path.abspath(path))
  spec_ = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(spec_)
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  spec_.loader.exec_module(module)
  if not hasattr(module, "get_study"):
    raise ValueError(f"{path} has no get_study(preset) function")
  return module.get_study(preset) if preset else module.get_study()


class StudyError(UserError):
  """A study file that does not load or expand (missing, broken, unknown preset)."""


def load_checked(spec: str) -> Study:
  """:func:`load_study` then :func:`expand`; any failure becomes one :class:`StudyError`."""
  try:
    study = load_study(spec)
    expand(study)
  except Exception as e:  # noqa: BLE001 - a study file can fail in any way; report it in one line
    raise StudyError(f"cannot load --study={spec}: {type(e).__name__}: {e}") from e
  return study


def default_workdir(study: Study) -> str:
  return os.path.join("runs", "studies", study.name, study.preset)


def run_all(study: Study, sweep_dir: str, *, jobs: int = 1, dry_run: bool = False,
            only: str = "", extra: Mapping | None = None, log=print) -> dict:
  """Runs every incomplete run (``jobs`` at a time), then the post steps; writes sweep.json.

  Returns the manifest written to ``SWEEP/sweep.json``: the study, each run's
  name, axes, command and status (``done`` / ``skipped`` / ``failed: exit N``).
  A failed run is reported and the others go on. ``extra`` overrides are added
  to every run (e.g. ``{"fl.rounds": 1}`` for a smoke test in a scratch directory).
  """
  sweep_dir = os.path.abspath(sweep_dir)  # children run with cwd=ROOT
  runs = expand(study)
  if only:
    runs = [r for r in runs if re.search(only, r.name)]
  os.makedirs(os.path.join(sweep_dir, "logs"), exist_ok=True)
  status: dict[str, str] = {}
  todo = []
  for r in runs:
    if is_complete(sweep_dir, r):
      status[r.name] = "skipped (complete)"
    else:
      todo.append(r)
  log(f"study {study.name}:{study.preset}: {len(runs)} runs, {len(runs) - len(todo)} complete, "
      f"{len(todo)} to run, {jobs} at a time")
  if dry_run:
    for r in todo:
      log("$ " + shell(command(study, r, sweep_dir, extra)))
    return {}
  t0 = time.time()
  running: list[tuple[Run, subprocess.Popen, object]] = []
  pending = list(todo)
  finished = 0
  try:
    while pending or running:
      while pending and len(running) < max(1, jobs):
        r = pending.pop(0)
        logf = open(os.path.join(sweep_dir, "logs", r.name + ".log"), "a")
        argv = command(study, r, sweep_dir, extra)
        logf.write("$ " + shell(argv) + "\n")
        logf.flush()
        running.append((r, subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                            cwd=ROOT), logf))
      time.sleep(0.2)
      for item in list(running):
        r, proc, logf = item
        rc = proc.poll()
        if rc is None:
          continue
        running.remove(item)
        logf.close()
        finished += 1
        status[r.name] = "done" if rc == 0 else f"failed: exit {rc}"
        eta = (time.time() - t0) / finished * (len(todo) - finished) / 60
        log(f"[{finished}/{len(todo)}] {r.name}: {status[r.name]} "
            f"({(time.time() - t0) / 60:.1f} min, ~{eta:.1f} min left)")
  finally:
    for _, proc, logf in running:  # interrupted: stop children; they resume next time
      proc.terminate()
      proc.wait()
      logf.close()
  for p in study.post:
    out = p.output.format(sweep=sweep_dir)
    missing = [n for n in p.needs if not os.path.exists(os.path.join(sweep_dir, n, "summary.json"))]
    if os.path.exists(out):
      status["post:" + p.name] = "skipped (complete)"
      continue
    if missing:
      status["post:" + p.name] = f"failed: missing runs {missing}"
      continue
    argv = [sys.executable, os.path.join(ROOT, p.argv[0])] + [a.format(sweep=sweep_dir)
                                                              for a in p.argv[1:]]
    log(f"post {p.name}: " + shell(argv))
    with open(os.path.join(sweep_dir, "logs", "post_" + p.name + ".log"), "a") as logf:
      rc = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    status["post:" + p.name] = "done" if rc == 0 else f"failed: exit {rc}"
  manifest = {
      "study": study.name,
      "preset": study.preset,
      "base": study.base,
      "seeds": list(study.seeds),
      "runs": [{"name": r.name, "axes": r.axes, "overrides": r.overrides,
                "command": shell(command(study, r, sweep_dir, extra)), "status": status[r.name]}
               for r in runs],
      "post": [{"name": p.name, "output": p.output, "status": status.get("post:" + p.name),
                "command": shell([sys.executable, os.path.join(ROOT, p.argv[0])] + list(p.argv[1:]))}
               for p in study.post],
  }
  tmp = os.path.join(sweep_dir, "sweep.json.tmp")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(sweep_dir, "sweep.json"))
  return manifest


def failed(manifest: dict) -> list[str]:
  return [r["name"] for r in manifest.get("runs", []) + manifest.get("post", [])
          if str(r.get("status", "")).startswith("failed")]
