"""Empirical privacy audit of a DP run: canaries, one training run, an epsilon lower bound.

  python -m fedjax_med.cli.privacy_audit --config=quickstart \\
      --config.privacy.level=record --config.privacy.epsilon=8 [--config.KEY=VALUE ...] \\
      [--canaries=200] [--canary_kind=noise] [--confidence=0.95] [--seed=S] [--output_dir=DIR]

Inserts ``--canaries`` canaries (record level: canary examples in random clients;
client level: canary clients uploading a fixed random direction), each included
with probability 1/2, trains the config once without writing a run, scores
every canary and prints the accountant's epsilon (an upper bound), the
empirical lower bound of the one-run audit (Steinke, Nasr & Jagielski 2023,
through ``jax_privacy.auditing``) and how tight the two are
(``fedjax_med.privacy.audit`` has the design). With ``--output_dir`` it writes
``DIR/audit.json``. ``--config`` is a config file or a packaged name, with
``--config.KEY=VALUE`` overrides, as for training. Bad input (no DP, fewer than 2
canaries, a bad config) exits with code 2 and one message; a lower bound above
the accountant's epsilon (a violation: a bug, or a chance of at most
1 - confidence) exits with 1.

In a clone also ``python analysis/privacy_audit.py``.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from fedjax_med import config_files
from fedjax_med.cli.args import fail

USAGE = ("Usage: python -m fedjax_med.cli.privacy_audit --config=quickstart "
         "--config.privacy.level=record|client [--config.KEY=VALUE ...] [--canaries=N] "
         "[--output_dir=DIR]")


def _define(argv: list[str]) -> flags.FlagValues:
  """This command's flags, on their own ``FlagValues`` (no clash with the training CLI's)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
      "config", None, "A config file (configs/quickstart.py) or packaged name (quickstart).",
      flag_values=fv, lock_config=True, sys_argv=argv)
  flags.DEFINE_integer("canaries", 200, "Canaries, each included with probability 1/2 (>= 2).",
                       flag_values=fv)
  flags.DEFINE_enum("canary_kind", "noise", ["noise", "mislabeled"],
                    "Record-level canaries: random-noise images with random labels, or held-out "
                    "images with wrong labels (ignored at client level).", flag_values=fv)
  flags.DEFINE_float("confidence", 0.95, "Confidence of the lower bound, in (0, 1).",
                     flag_values=fv)
  flags.DEFINE_integer("seed", None, "Seed of the canaries (default: the config's seed).",
                       flag_values=fv)
  flags.DEFINE_string("output_dir", "", "Write DIR/audit.json (default: print only).",
                      flag_values=fv)
  flags.DEFINE_enum("progress", "auto", ["auto", "bar", "lines", "none"],
                    "auto: a bar on a terminal, else a log line every ~10% of the rounds.",
                    flag_values=fv)
  return fv


def report(result: dict) -> str:
  """The short human-readable report of an audit result."""
  upper, lower = result["accountant_epsilon"], result["epsilon_lower_bound"]
  conf = f"{100 * result['confidence']:g} %"
  tight = result["tightness"]
  lines = [
      f"{result['level']}-level audit, {result['rounds']} rounds, {result['num_canaries']} "
      f"canaries ({result['canaries_in']} included, {result['canaries_out']} held out); "
      f"delta = {result['delta']:g}",
      f"  accountant epsilon (upper bound, {result['accountant']}): {upper:.4g}",
      f"  empirical epsilon (lower bound, {conf} confidence): {lower:.4g}",
      "  tightness (lower / upper): " + ("n/a" if tight is None else f"{tight:.3f}"),
      f"  membership AUC {result['auc']:.3f}; a perfect attack with these canaries could "
      f"certify at most epsilon {result['epsilon_ceiling']:.3g}",
  ]
  if result["consistent"]:
    score = ("a black-box loss score of the final model" if result["level"] == "record" else
             "one final model change scored against each canary")
    lines.append(
        "The lower bound does not exceed the accountant's epsilon, as it must. A loose bound is "
        f"expected: a one-run audit with few canaries and {score} certifies only a fraction of "
        "epsilon (Steinke, Nasr & Jagielski 2023, \"Privacy Auditing with One (1) Training "
        "Run\"), and never more than the ceiling above.")
  else:
    lines.append(
        f"VIOLATION: the lower bound exceeds the accountant's epsilon. Unless this is the "
        f"chance of at most {100 * (1 - result['confidence']):.3g} % that the bound is wrong, "
        "the mechanism or its accounting is broken.")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  """Parses ``argv`` (without the program name; default ``sys.argv[1:]``) and audits.

  Returns 0 (or 1 on a violation); exits with 2 on bad input.
  """
  args = list(sys.argv[1:] if argv is None else argv)
  if any(a in ("-h", "--help", "-help", "--helpfull") for a in args):
    print(__doc__.strip() + "\n\n" + _define([]).get_help())
    sys.exit(0)  # like argparse's --help
  from fedjax_med.cli import train as train_cli  # the --config resolution of training

  full = ["privacy_audit"] + args
  try:
    full = train_cli.resolve_config_arg(full)
  except config_files.UnknownConfigError as e:
    fail(str(e))
  fv = _define(full)
  try:
    rest = fv(full)
    config = fv.config
    if config is not None:
      config.to_dict()  # config_flags defers a bad --config path to first access
  except (flags.Error, KeyError, ValueError, AttributeError, TypeError, OSError) as e:
    fail(" ".join(train_cli._describe(e).split()) + " (see --help)")  # one line
  if len(rest) > 1:
    fail(f"unexpected arguments {rest[1:]} ({USAGE})")
  if config is None:
    fail(f"--config=<file or packaged name> is required ({USAGE})")
  if fv.canaries < 2:
    fail(f"--canaries must be >= 2, got {fv.canaries}")
  if not 0 < fv.confidence < 1:
    fail(f"--confidence must be in (0, 1), got {fv.confidence}")
  if config.privacy.level == "none":
    fail("nothing to audit: --config.privacy.level=none; set it to record or client")

  from fedjax_med import errors, metrics, progress
  from fedjax_med.cli import logs

  logs.setup_logging()
  # (dp_accounting's "failed to converge" warnings are muted by privacy.accounting)
  bar = None

  def on_round(done: int, total: int) -> None:
    nonlocal bar
    if bar is None:
      bar = progress.Progress(total, mode=fv.progress, unit="round")
    bar.update(done)

  try:
    from fedjax_med.privacy import audit

    result = audit.audit(config, fv.canaries, canary_kind=fv.canary_kind,
                         confidence=fv.confidence, seed=fv.seed, on_round=on_round)
  except errors.UserError as e:
    fail(str(e), 2)
  except errors.NonFiniteLossError as e:
    fail(str(e), 1)
  finally:
    if bar is not None:
      bar.close()
  if fv.output_dir:
    path = os.path.join(fv.output_dir, "audit.json")
    metrics.write_json_atomic(path, result)
    print(f"wrote {path}")
  print(report(result))
  return 0 if result["consistent"] else 1


if __name__ == "__main__":
  sys.exit(main())
