"""Running a study: each run in its own process and workdir, resumable, then the post steps.

Each run is ``python -m fedjax_med.cli.train --config=BASE --workdir=SWEEP/RUN
--config.KEY=VALUE ...`` (``launch/main.py`` in a clone) in its own process and
workdir, run from the current directory, so finished runs are kept: a run is
complete when its ``summary.json`` exists, and rerunning the sweep skips it
(an interrupted run resumes from its last checkpoint). ``post`` steps (e.g. a
loss-landscape scan of two finished runs) run after the grid, each skipped when
its output file exists. ``SWEEP/sweep.json`` records every run's command and status,
and the sweep's own command lines (``invocations``, printed by the report). Runs and
post steps are ``python -m`` modules, so a sweep needs no clone; the recorded
commands say ``python`` and paths relative to the current directory.

Seeds in one process (``vectorize_seeds``): runs that differ only in consecutive seeds
can train together, vectorized in one compiled round (``--config.runs.seeds=R
--run_workdirs=...``), each still writing its own workdir exactly as alone. ``auto``
does so where it was measured faster (``engine.vectorize_seeds``: on GPUs; on CPU
with one job at a time, while two processes at a time beat it on 2 cores;
bench/many_runs.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from fedjax_med.cli import commands
from fedjax_med.studies.grid import Run, expand
from fedjax_med.studies.specs import Post, Study


def command(study: Study, run: Run, sweep_dir: str, extra: Mapping | None = None) -> list[str]:
  """The training argv of ``run`` (``python -m fedjax_med.cli.train``); ``extra`` overrides
  come last (smoke tests)."""
  overrides = {**run.overrides, **(extra or {})}
  return [*commands.python_argv("fedjax_med.cli.train"), f"--config={study.base}",
          f"--workdir={os.path.join(sweep_dir, run.name)}", "--config.log.progress=lines"] + [
              f"--config.{k}={v}" for k, v in overrides.items()]  # str() parses back


def group_command(study: Study, group: Sequence[Run], sweep_dir: str,
                  extra: Mapping | None = None) -> list[str]:
  """One process training the runs of ``group`` (consecutive seeds, the same other
  overrides) vectorized: the first run's command with ``runs.seeds`` and their workdirs."""
  if len(group) == 1:
    return command(study, group[0], sweep_dir, extra)
  argv = command(study, group[0], sweep_dir, extra)
  argv = [a for a in argv if not a.startswith("--workdir=")]
  return argv + [f"--config.runs.seeds={len(group)}",
                 "--run_workdirs=" + ",".join(os.path.join(sweep_dir, r.name) for r in group)]


def seed_groups(runs: Sequence[Run], extra: Mapping | None = None) -> list[list[Run]]:
  """``runs`` in groups that can train vectorized: the same overrides but the seed, and
  consecutive seeds (a group is ``seed, seed + 1, ...``); order of first appearance."""
  if extra and "seed" in extra:
    return [[r] for r in runs]
  by_rest: dict[str, list[Run]] = {}
  for r in runs:
    rest = {k: v for k, v in r.overrides.items() if k != "seed"}
    by_rest.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(r)
  groups = []
  for members in by_rest.values():
    members = sorted(members, key=lambda r: r.overrides.get("seed", 0))
    current = [members[0]]
    for r in members[1:]:
      if r.overrides.get("seed", 0) == current[-1].overrides.get("seed", 0) + 1:
        current.append(r)
      else:
        groups.append(current)
        current = [r]
    groups.append(current)
  return groups


def backend() -> str:
  """The JAX backend runs get, asked of a child process (this one must not take the GPU)."""
  try:
    out = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                         capture_output=True, text=True, env=child_env(), timeout=300)
  except subprocess.TimeoutExpired:
    return "cpu"
  return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout else "cpu"


def shell(argv: Sequence[str]) -> str:
  """``argv`` as a copy-pasteable line relative to the current directory."""
  cwd = os.getcwd().rstrip(os.sep) + os.sep
  parts = []
  for a in argv:
    a = "python" if a == sys.executable else a.replace(cwd, "")
    parts.append(a if re.match(r"^[\w@%+=:,./-]+$", a) else "'" + a.replace("'", "'\\''") + "'")
  return " ".join(parts)


def is_complete(sweep_dir: str, run: Run) -> bool:
  return os.path.exists(os.path.join(sweep_dir, run.name, "summary.json"))


def child_env() -> dict[str, str]:
  """The environment of runs and post steps: ``python -m`` imports this fedjax_med (a
  checkout that is not installed gets its root on ``PYTHONPATH``)."""
  import site

  import fedjax_med

  root = os.path.dirname(os.path.dirname(os.path.abspath(fedjax_med.__file__)))
  env = dict(os.environ)
  sites = {os.path.abspath(p) for p in [*site.getsitepackages(), site.getusersitepackages()]}
  if root not in sites:
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *paths])
  return env


def run_all(study: Study, sweep_dir: str, *, jobs: int = 1, dry_run: bool = False,
            only: str = "", extra: Mapping | None = None, log=print,
            invocation: Sequence[str] | None = None, vectorize_seeds: str = "no") -> dict:
  """Runs every incomplete run (``jobs`` at a time), then the post steps; writes sweep.json.

  Args:
    study: the study.
    sweep_dir: the sweep directory (relative to the current directory).
    jobs: runs at once.
    dry_run: only log the commands of the incomplete runs (and return ``{}``).
    only: a regular expression; only runs whose name it matches.
    extra: overrides added to every run (e.g. ``{"fl.rounds": 1}`` for a smoke test).
    log: where progress lines go.
    invocation: the sweep's own argv as typed (``commands.invocation``), added to the
      manifest's ``invocations`` (each distinct command line once, in order).
    vectorize_seeds: ``yes``: runs that differ only in consecutive seeds train in one
      process, vectorized; ``no``: every run its own process; ``auto``: ``yes`` where
      ``engine.vectorize_seeds`` says it is faster (the runs' backend and ``jobs``).

  Returns:
    The manifest written to ``SWEEP/sweep.json``: the study, each run's name,
    axes, command and status (``done`` / ``skipped (complete)`` / ``failed: exit
    N``), and the sweep's ``invocations``. A failed run is reported and the others go on.
  """
  sweep_dir = os.path.abspath(sweep_dir)
  runs = expand(study)
  if only:
    runs = [r for r in runs if re.search(only, r.name)]
  os.makedirs(os.path.join(sweep_dir, "logs"), exist_ok=True)
  status = {r.name: "skipped (complete)" for r in runs if is_complete(sweep_dir, r)}
  todo = [r for r in runs if r.name not in status]
  log(f"study {study.name}:{study.preset}: {len(runs)} runs, {len(runs) - len(todo)} complete, "
      f"{len(todo)} to run, {jobs} at a time")
  if vectorize_seeds not in ("yes", "no", "auto"):
    raise ValueError(f"vectorize_seeds={vectorize_seeds!r}: choose yes, no or auto")
  if vectorize_seeds == "auto" and all(len(g) == 1 for g in seed_groups(todo, extra)):
    vectorize_seeds = "no"  # nothing to group: no need to ask for the backend
  if vectorize_seeds == "auto":
    from fedjax_med import engine

    kind = backend()
    vectorize_seeds = "yes" if engine.vectorize_seeds(kind, jobs) else "no"
    how = "vectorized in one process" if vectorize_seeds == "yes" else "each in its own process"
    log(f"backend {kind}: seeds {how} (--vectorize_seeds=auto)")
  groups = seed_groups(todo, extra) if vectorize_seeds == "yes" else [[r] for r in todo]
  if dry_run:
    for g in groups:
      log("$ " + shell(group_command(study, g, sweep_dir, extra)))
    return {}
  argvs = {g[0].name if len(g) == 1 else f"{g[0].name}..{len(g)}-seeds":
           group_command(study, g, sweep_dir, extra) for g in groups}
  members = {name: g for name, g in zip(argvs, groups, strict=True)}
  together: dict[str, str] = {}  # run name -> the command that trained it with its seeds
  alone = []
  for name, result in _run_processes(argvs, sweep_dir, jobs, log).items():
    group = members[name]
    if len(group) == 1:
      status[group[0].name] = result
      continue
    _share_log(sweep_dir, name, group)
    if result == "failed: exit 2":  # refused together (e.g. attack, DP): each on its own
      log(f"{name}: the seeds cannot train vectorized; running them one by one")
      alone += group
      continue
    for r in group:  # one seed may have diverged while the others finished
      status[r.name] = result if not is_complete(sweep_dir, r) else "done"
      together[r.name] = shell(argvs[name])
  if alone:
    status.update(_run_processes({r.name: command(study, r, sweep_dir, extra) for r in alone},
                                 sweep_dir, jobs, log))
  for p in study.post:
    status["post:" + p.name] = _run_post(p, sweep_dir, log)
  manifest = _manifest(study, runs, sweep_dir, extra, status)
  for entry in manifest["runs"]:
    if entry["name"] in together:  # "command" alone regenerates it (to float tolerance)
      entry["trained_with"] = together[entry["name"]]
  manifest["invocations"] = _invocations(sweep_dir, invocation)
  tmp = os.path.join(sweep_dir, "sweep.json.tmp")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(tmp, os.path.join(sweep_dir, "sweep.json"))
  return manifest


def _share_log(sweep_dir: str, group_name: str, group: Sequence[Run]) -> None:
  """Copies a seed group's log to each member's ``logs/<run>.log`` (where the report
  looks for a run's error)."""
  src = os.path.join(sweep_dir, "logs", group_name + ".log")
  if not os.path.exists(src):
    return
  with open(src, errors="replace") as f:
    text = f.read()
  for r in group:
    with open(os.path.join(sweep_dir, "logs", r.name + ".log"), "a") as f:
      f.write(f"(trained with its seeds in one process: logs/{group_name}.log)\n{text}")


def _run_processes(argvs: Mapping[str, list[str]], sweep_dir: str, jobs: int, log) -> dict:
  """Runs ``argvs`` (run name -> argv) ``jobs`` at a time, logging to ``logs/<name>.log``.

  Returns:
    run name -> ``done`` or ``failed: exit N``. On an exception (Ctrl-C) the
    running children are stopped; they resume from their checkpoints next time.
  """
  t0 = time.time()
  status: dict[str, str] = {}
  running: list[tuple[str, subprocess.Popen, object]] = []
  pending = list(argvs)
  try:
    while pending or running:
      while pending and len(running) < max(1, jobs):
        name = pending.pop(0)
        logf = open(os.path.join(sweep_dir, "logs", name + ".log"), "a")
        logf.write("$ " + shell(argvs[name]) + "\n")
        logf.flush()
        proc = subprocess.Popen(argvs[name], stdout=logf, stderr=subprocess.STDOUT,
                                env=child_env())
        running.append((name, proc, logf))
      time.sleep(0.2)
      for item in [x for x in running if x[1].poll() is not None]:
        name, proc, logf = item
        running.remove(item)
        logf.close()
        status[name] = "done" if proc.returncode == 0 else f"failed: exit {proc.returncode}"
        minutes = (time.time() - t0) / 60
        eta = minutes / len(status) * (len(argvs) - len(status))
        log(f"[{len(status)}/{len(argvs)}] {name}: {status[name]} "
            f"({minutes:.1f} min, ~{eta:.1f} min left)")
  finally:
    for _, proc, logf in running:
      proc.terminate()
      proc.wait()
      logf.close()
  return status


def _post_argv(p: Post, sweep_dir: str | None) -> list[str]:
  """The step's argv; ``{sweep}`` filled in unless ``sweep_dir`` is None (the manifest)."""
  args = p.argv[1:] if sweep_dir is None else [a.format(sweep=sweep_dir) for a in p.argv[1:]]
  return [*commands.python_argv(p.argv[0]), *args]


def _run_post(p: Post, sweep_dir: str, log) -> str:
  """Runs one post step unless its output exists or a run it needs is missing; its status."""
  if os.path.exists(p.output.format(sweep=sweep_dir)):
    return "skipped (complete)"
  missing = [n for n in p.needs if not os.path.exists(os.path.join(sweep_dir, n, "summary.json"))]
  if missing:
    return f"failed: missing runs {missing}"
  argv = _post_argv(p, sweep_dir)
  log(f"post {p.name}: " + shell(argv))
  with open(os.path.join(sweep_dir, "logs", "post_" + p.name + ".log"), "a") as logf:
    rc = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT, env=child_env()).returncode
  return "done" if rc == 0 else f"failed: exit {rc}"


def _manifest(study: Study, runs: Sequence[Run], sweep_dir: str, extra: Mapping | None,
              status: Mapping[str, str]) -> dict:
  return {
      "study": study.name,
      "preset": study.preset,
      "base": study.base,
      "seeds": list(study.seeds),
      "runs": [{"name": r.name, "axes": r.axes, "overrides": r.overrides,
                "command": shell(command(study, r, sweep_dir, extra)), "status": status[r.name]}
               for r in runs],
      "post": [{"name": p.name, "output": p.output, "status": status.get("post:" + p.name),
                "command": shell(_post_argv(p, None))} for p in study.post],
  }


def _invocations(sweep_dir: str, argv: Sequence[str] | None) -> list[dict]:
  """The ``invocations`` of the existing sweep.json plus ``argv`` (``{"command", "cwd"}``)."""
  try:
    with open(os.path.join(sweep_dir, "sweep.json")) as f:
      seen = json.load(f).get("invocations", [])
  except (OSError, ValueError):
    seen = []
  if argv:
    entry = {"command": shell(argv), "cwd": os.getcwd()}
    if entry not in seen:
      seen.append(entry)
  return seen


def failed(manifest: dict) -> list[str]:
  """Names of the failed runs and post steps of a manifest."""
  return [r["name"] for r in manifest.get("runs", []) + manifest.get("post", [])
          if str(r.get("status", "")).startswith("failed")]
