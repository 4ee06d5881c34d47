"""Entry point: ``python launch/main.py --config=configs/quickstart.py --workdir=runs/qs``.

Any config field can be overridden: ``--config.fl.rounds=50``; an unknown key
is an error. Bad input (config values, missing or corrupt data) exits with
code 2 and one message; a diverged run exits with code 1 and keeps its last
good checkpoint.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for config, metrics, summary and checkpoints.")
flags.DEFINE_bool("fresh", False, "Delete the run already in --workdir (config.json, metrics, "
                  "summary, checkpoints) and start over; without it a rerun resumes, and a "
                  "different config is refused.")


def _fail(message: str, code: int) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)


def _describe(e: BaseException) -> str:
  """Unwraps ml_collections' KeyError-in-AttributeError for a mistyped --config key."""
  while e.args and isinstance(e.args[0], BaseException):
    e = e.args[0]
  text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
  return f"unknown config key {text}" if isinstance(e, KeyError) else text


def parse_flags(argv):
  try:
    return FLAGS(argv)
  except (flags.Error, KeyError, ValueError, AttributeError, TypeError) as e:
    _fail(f"{_describe(e)}\nUsage: python launch/main.py --config=configs/quickstart.py --workdir=DIR "
          "[--config.KEY=VALUE ...]", 2)


def main(argv):
  del argv
  try:
    config = FLAGS.config
    config.to_dict()  # config_flags defers a bad --config path to first access
  except OSError as e:
    _fail(f"cannot load --config: {e}", 2)
  if config is None or FLAGS.workdir is None:
    _fail("both --config=configs/<name>.py and --workdir=<dir> are required", 2)
  from fedjax_med import cli, errors, train  # after flag parsing: keep --help fast

  cli.setup_logging()
  try:
    train.train_and_evaluate(config, FLAGS.workdir, fresh=FLAGS.fresh)
  except errors.UserError as e:
    _fail(str(e), 2)
  except errors.NonFiniteLossError as e:
    _fail(str(e), 1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
