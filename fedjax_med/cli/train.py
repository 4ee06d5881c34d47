"""Trains one run: ``fedjax-med-train --config=quickstart --workdir=runs/qs``.

Also ``python -m fedjax_med.cli.train`` or, in a clone, ``python launch/main.py``.
``--config`` is a config file (``configs/quickstart.py``) or a packaged name
(``quickstart``; ``comm:topk_ef`` passes ``topk_ef`` to its ``get_config``), see
``fedjax_med/config_files.py``. Any config field can be overridden:
``--config.fl.rounds=50``; an unknown key is an error. Bad input (config values,
missing or corrupt data) exits with code 2 and one message; a diverged run exits
with code 1 and keeps its last good checkpoint.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from fedjax_med import config_files
from fedjax_med.cli.args import fail

USAGE = ("Usage: fedjax-med-train --config=quickstart --workdir=DIR [--config.KEY=VALUE ...] "
         "(or python launch/main.py --config=configs/quickstart.py ...)")
_ARGV: list[str] = []  # the argv being parsed: config_flags reads --config.KEY overrides here

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "A config file (configs/quickstart.py) or packaged name (quickstart).",
    lock_config=True, sys_argv=_ARGV)
flags.DEFINE_string("workdir", None, "Directory for config, metrics, summary and checkpoints.")
flags.DEFINE_bool("fresh", False, "Delete the run already in --workdir (config.json, metrics, "
                  "summary, checkpoints) and start over; without it a rerun resumes, and a "
                  "different config is refused.")
# Several processes, one run (README "Run on several machines"; fedjax_med/multihost.py).
flags.DEFINE_bool("distributed", False, "Join a multi-process run: jax.distributed.initialize "
                  "with the addresses below, or those JAX detects (SLURM, Open MPI, TPU).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (implies "
                    "--distributed).")
flags.DEFINE_integer("num_processes", None, "Processes in the run (implies --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index, 0..num_processes-1 (implies "
                     "--distributed).")
flags.DEFINE_list("run_workdirs", None, "With --config.runs.seeds=R: the R runs' workdirs "
                  "(comma-separated, seed order) instead of WORKDIR/seed_<seed>; a sweep "
                  "passes its runs' own folders.")
flags.DEFINE_integer("distributed_timeout_s", 300, "How long a process waits for the "
                     "coordinator (process 0) and for every process to join.")
flags.DEFINE_integer("cpu_devices", 0, "> 0: this process exposes that many CPU devices "
                     "(test a multi-device mesh without accelerators).")


def _describe(e: BaseException) -> str:
  """Unwraps ml_collections' KeyError-in-AttributeError for a mistyped --config key."""
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  return f"unknown config key {text}" if isinstance(e, KeyError) else text


def resolve_config_arg(argv: list[str]) -> list[str]:
  """``argv`` with the value of ``--config`` (``--config=X`` or ``--config X``) resolved to
  a file (``config_files.resolve``); raises ``config_files.UnknownConfigError``."""
  out = list(argv)
  for i, a in enumerate(out):
    if a == "--":
      break
    for prefix in ("--config=", "-config="):
      if a.startswith(prefix):
        out[i] = prefix + config_files.resolve(a[len(prefix):])
    if a in ("--config", "-config") and i + 1 < len(out):
      out[i + 1] = config_files.resolve(out[i + 1])
  return out


def parse_flags(argv):
  try:
    return FLAGS(argv)
  except (flags.Error, KeyError, ValueError, AttributeError, TypeError) as e:
    fail(f"{_describe(e)}\n{USAGE}")


def _run(argv) -> int:
  del argv
  try:
    config = FLAGS.config
    config.to_dict()  # config_flags defers a bad --config path to first access
  except OSError as e:
    fail(f"cannot load --config: {e}")
  if config is None or (FLAGS.workdir is None and not FLAGS.run_workdirs):
    fail("both --config=<file or packaged name> and --workdir=<dir> are required")
  if FLAGS.run_workdirs and len(FLAGS.run_workdirs) != config.runs.seeds:
    fail(f"--run_workdirs names {len(FLAGS.run_workdirs)} folders for --config.runs.seeds="
         f"{config.runs.seeds}; give one folder per seed")
  from fedjax_med import errors, multihost, train  # after flag parsing: keep --help fast
  from fedjax_med.cli import logs

  logs.setup_logging()
  distributed = FLAGS.distributed or any(
      v is not None for v in (FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id))
  if distributed:
    if FLAGS.num_processes is not None and not (
        FLAGS.process_id is not None and 0 <= FLAGS.process_id < FLAGS.num_processes):
      fail(f"--process_id={FLAGS.process_id} must be in [0, --num_processes="
           f"{FLAGS.num_processes})")
    try:
      if FLAGS.coordinator_address and FLAGS.process_id:  # process 0 starts the coordinator
        multihost.wait_for_coordinator(FLAGS.coordinator_address, FLAGS.distributed_timeout_s)
      multihost.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           cpu_devices=FLAGS.cpu_devices, timeout_s=FLAGS.distributed_timeout_s)
    except (ValueError, RuntimeError, ConnectionError) as e:
      fail(f"cannot join the multi-process run: {str(e).splitlines()[0]} (check "
           "--coordinator_address, --num_processes and --process_id, or run without them)")
  elif FLAGS.cpu_devices:
    import jax

    jax.config.update("jax_num_cpu_devices", FLAGS.cpu_devices)
  try:
    if FLAGS.run_workdirs:
      from fedjax_med import config as config_lib

      config_lib.check_runs(config)
      configs = [train.run_config(config, config.seed + r) for r in range(config.runs.seeds)]
      train.train_runs(configs, FLAGS.run_workdirs, fresh=FLAGS.fresh)
    else:
      train.train_and_evaluate(config, FLAGS.workdir, fresh=FLAGS.fresh)
  except errors.UserError as e:
    fail(str(e), 2)
  except errors.NonFiniteLossError as e:
    fail(str(e), 1)
  return 0


def main(argv: list[str] | None = None) -> int:
  """Parses ``argv`` (without the program name; default ``sys.argv[1:]``) and trains.

  Exits (``SystemExit``) with 0, 1 (diverged) or 2 (bad input), as absl's ``app.run``.
  """
  full = [sys.argv[0] if argv is None else "fedjax-med-train"] + list(
      sys.argv[1:] if argv is None else argv)
  try:
    full = resolve_config_arg(full)
  except config_files.UnknownConfigError as e:
    fail(str(e))
  _ARGV[:] = full
  for name in ("config", "workdir", "fresh", "distributed", "coordinator_address",
               "num_processes", "process_id", "distributed_timeout_s", "cpu_devices",
               "run_workdirs"):  # --help lists these
    FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
  app.run(_run, argv=full, flags_parser=parse_flags)
  return 0


if __name__ == "__main__":
  sys.exit(main())
