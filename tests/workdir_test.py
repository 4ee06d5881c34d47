"""A run you can trust: workdir identity and lock, self-checking checkpoints, strict JSON logs."""

import glob
import json
import math
import os
import shutil
import signal
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import base
from fedjax_med import checkpoint, errors, experiment, metrics, train, workdir
from fedjax_med.checkpoint import CHECKSUMS
from tests.train_test import small_config

ROUNDS = 4
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config_for(root, **overrides):
  return small_config(root, **{"ckpt.every": 1, "ckpt.keep": 4, "fl.rounds": ROUNDS, **overrides})


@pytest.fixture(scope="module")
def finished(data_root, tmp_path_factory):  # noqa: F811
  """An uninterrupted run: its final state and metrics log (the reference for resumes)."""
  path = str(tmp_path_factory.mktemp("full"))
  state = train.train_and_evaluate(config_for(data_root), path)
  return path, jax.device_get(state), log_without_clock(path)


def log_without_clock(path):
  records = metrics.read_jsonl(os.path.join(path, "metrics.jsonl"))
  for r in records:
    r.pop("elapsed_s", None)
  return records


def snapshot(path) -> dict:
  """Every file under ``path`` with its bytes (to prove nothing changed)."""
  out = {}
  for f in sorted(glob.glob(os.path.join(path, "**"), recursive=True)):
    if os.path.isfile(f) and not f.endswith(".lock"):
      with open(f, "rb") as fh:
        out[os.path.relpath(f, path)] = fh.read()
  return out


def test_another_config_is_refused_naming_the_keys_and_changing_nothing(data_root, finished,  # noqa: F811
                                                                        tmp_path):
  path = str(tmp_path / "run")
  shutil.copytree(finished[0], path)
  before = snapshot(path)
  for key, value in (("fl.client_lr", 0.05), ("model.name", "cnn"), ("fl.rounds", 2)):
    with pytest.raises(workdir.WorkdirError, match=key.replace(".", r"\.")):
      train.train_and_evaluate(config_for(data_root, **{key: value}), path)
  assert snapshot(path) == before


def test_fields_that_do_not_change_results_may_differ(data_root, finished, tmp_path):  # noqa: F811
  path = str(tmp_path / "run")
  shutil.copytree(finished[0], path)
  os.remove(os.path.join(path, "summary.json"))
  config = config_for(data_root, **{"log.progress": "lines", "eval.batch_size": 16})
  state = train.train_and_evaluate(config, path)
  chex.assert_trees_all_equal(jax.device_get(state), finished[1])


def test_fresh_starts_over(data_root, finished, tmp_path):  # noqa: F811
  path = str(tmp_path / "run")
  shutil.copytree(finished[0], path)
  state = train.train_and_evaluate(config_for(data_root, **{"fl.rounds": 2}), path, fresh=True)
  assert int(state.round) == 2
  assert json.load(open(os.path.join(path, "summary.json")))["rounds_completed"] == 2
  assert max(r["round"] for r in metrics.read_jsonl(os.path.join(path, "metrics.jsonl"))) == 2


def test_a_locked_workdir_is_refused_with_the_holders_pid(data_root, tmp_path):  # noqa: F811
  path = str(tmp_path / "run")
  with workdir.Lock(path):
    with pytest.raises(workdir.WorkdirError, match=f"in use by process {os.getpid()}"):
      train.train_and_evaluate(config_for(data_root), path)
  assert not os.path.exists(os.path.join(path, "config.json"))


def test_a_file_as_workdir_is_a_clear_error(data_root, tmp_path):  # noqa: F811
  (tmp_path / "file").write_text("x")
  with pytest.raises(workdir.WorkdirError, match="is a file"):
    train.train_and_evaluate(config_for(data_root), str(tmp_path / "file"))
  with pytest.raises(workdir.WorkdirError):
    train.train_and_evaluate(config_for(data_root), str(tmp_path / "file" / "run"))


def _data_files(step_dir):
  return sorted(f for f in glob.glob(os.path.join(step_dir, "**", "d", "*"), recursive=True)
                if os.path.isfile(f))


def _truncate(step_dir):
  f = _data_files(step_dir)[0]
  os.truncate(f, os.path.getsize(f) // 2)


def _garbage(step_dir):
  for f in _data_files(step_dir):
    with open(f, "wb") as fh:
      fh.write(os.urandom(64))


def _flip_byte(step_dir):
  f = _data_files(step_dir)[-1]
  data = bytearray(open(f, "rb").read())
  data[len(data) // 2] ^= 0xFF
  open(f, "wb").write(bytes(data))


def _no_metadata(step_dir):
  os.remove(os.path.join(step_dir, "default", "_METADATA"))


def _emptied(step_dir):
  shutil.rmtree(step_dir)
  os.makedirs(step_dir)


@pytest.mark.parametrize("damage", [_truncate, _garbage, _flip_byte, _no_metadata, _emptied])
def test_a_damaged_latest_checkpoint_falls_back_and_the_run_ends_as_uninterrupted(
    data_root, finished, tmp_path, damage, caplog):  # noqa: F811
  path = str(tmp_path / "run")
  shutil.copytree(finished[0], path)
  os.remove(os.path.join(path, "summary.json"))
  shutil.rmtree(os.path.join(path, "checkpoints", str(ROUNDS)))  # as if killed before round 4's
  damage(os.path.join(path, "checkpoints", "3"))
  with open(os.path.join(path, "metrics.jsonl"), "a") as f:
    f.write('{"round": 4, "split": "tr')  # and a line torn by the kill
  state = train.train_and_evaluate(config_for(data_root), path)
  assert "skipping checkpoint 3" in caplog.text
  chex.assert_trees_all_equal(jax.device_get(state), finished[1])
  assert log_without_clock(path) == finished[2]


def test_no_valid_checkpoint_is_one_clear_error(data_root, finished, tmp_path):  # noqa: F811
  path = str(tmp_path / "run")
  shutil.copytree(finished[0], path)
  with open(os.path.join(path, "checkpoints", CHECKSUMS), "w") as f:
    json.dump({}, f)  # nothing can be verified
  with pytest.raises(errors.UserError, match="no valid checkpoint.*--fresh"):
    train.train_and_evaluate(config_for(data_root), path)


def test_non_finite_state_is_never_saved(data_root, tmp_path):  # noqa: F811
  # The audit's case: the loss of round 1 is measured before the step and is finite, but the
  # model after it is not; checkpoint 1 used to hold 154,044 non-finite parameters.
  config = config_for(data_root, **{"fl.client_lr": 1e38, "fl.local_steps": 1, "eval.every": 1})
  with pytest.raises(errors.NonFiniteLossError, match="non-finite model or optimizer state in "
                     "round 1.*No checkpoint had been saved yet"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not [d for d in os.listdir(tmp_path / "checkpoints") if d.isdigit()]
  assert not os.path.exists(tmp_path / "summary.json")


def test_metrics_jsonl_is_strict_json_and_survives_a_torn_line(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  writer = metrics.JsonlWriter(path)
  writer.write({"round": 1, "split": "train", "loss": float("nan"), "auc": np.float32(np.inf)})
  writer.write({"round": 2, "split": "train", "loss": 0.5})
  with open(path, "a") as f:
    f.write('{"round": 3, "spl')

  def no_constants(name):
    raise AssertionError(f"bare {name} in metrics.jsonl")

  lines = open(path).read().splitlines()
  first = json.loads(lines[0], parse_constant=no_constants)
  assert first["loss"] is None and first["auc"] is None and first["nonfinite"] == ["auc", "loss"]
  assert [r["round"] for r in metrics.read_jsonl(path)] == [1, 2]
  writer.truncate_after(2)
  assert [json.loads(x)["round"] for x in open(path).read().splitlines()] == [1, 2]
  assert math.isfinite(metrics.read_jsonl(path)[1]["loss"])


@pytest.mark.parametrize("overrides,match", [
    ({"seed": 2**64}, "seed"),
    ({"log.progress": "foo"}, "log.progress"),
    ({"eval.batch_size": 100_000_000}, "eval.batch_size"),
    ({"fl.batch_size": 10_000_000}, "fl.batch_size"),
    ({"fl.local_epochs": 100_000.0}, "fl.local_epochs"),
    ({"algorithm.feddyn.alpha": float("inf")}, "algorithm.feddyn.alpha"),
    ({"algorithm.name": "fedbn"}, "BatchNorm"),  # cnn_tiny has none
])
def test_bad_inputs_are_one_clear_error_before_any_output(data_root, tmp_path, overrides, match):  # noqa: F811
  with pytest.raises(errors.UserError, match=match):
    train.train_and_evaluate(config_for(data_root, **overrides), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_tensorboard_events_and_curves_png(finished):
  path = finished[0]
  events = glob.glob(os.path.join(path, "tensorboard", "events.out.tfevents.*"))
  assert events
  data = b"".join(open(f, "rb").read() for f in events)
  for tag in (b"train/loss", b"test/auc", b"val/balanced_accuracy", b"config"):
    assert tag in data, tag
  pytest.importorskip("matplotlib")
  import importlib.util

  spec = importlib.util.spec_from_file_location(
      "plot_run", os.path.join(os.path.dirname(__file__), "..", "analysis", "plot_run.py"))
  plot_run = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(plot_run)
  out = os.path.join(path, "curves.png")
  assert plot_run.main([f"--workdir={path}", f"--output={out}"]) == 0
  assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
  assert plot_run.main([f"--workdir={path}/missing"]) == 2


# Kill -9: the run is a `launch/main.py` process SIGKILLed at a named point (the
# $FEDJAX_MED_TEST_KILL_AT hook of fedjax_med/checkpoint.py, or inside orbax's save); the
# same command run again must end exactly as the uninterrupted `finished` run.

# Inside orbax's save of step 3: its temporary folder is written, not yet renamed into place.
_KILL_IN_ORBAX = """
import os, runpy, signal, sys
from orbax.checkpoint._src.path import atomicity
real = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self, *args, **kwargs):
  if self._final_path.name == "3":
    os.kill(os.getpid(), signal.SIGKILL)
  return await real(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = finalize
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
TIMING = ("wall_time_s", "time_to_first_round_s", "compile")  # clock and compile-cache fields


def cli_args(config) -> list[str]:
  """``--config.KEY=VALUE`` for every field where ``config`` differs from configs/base.py."""
  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out

  ours, default = flat(config.to_dict()), flat(base.get_config().to_dict())
  return [f"--config.{k}={v}" for k, v in sorted(ours.items()) if v != default.get(k)]


def summary_without_clock(path) -> dict:
  with open(os.path.join(path, "summary.json")) as f:
    summary = json.load(f)
  return {k: v for k, v in summary.items() if k not in TIMING}


@pytest.mark.slow
@pytest.mark.parametrize("point,keep,resumed_at", [
    ("save:1", 4, 0),  # the first checkpoint written, its digest not: nothing to resume
    ("orbax:3", 4, 2),  # inside orbax's save: a temporary folder, no step 3
    ("save:3", 1, 2),  # keep=1: step 3 written without digest; step 2 must still be there
    ("eval:4", 4, 3),  # the last evaluation: val record written, test record not
    ("summary:4", 4, 4),  # after the last checkpoint, before summary.json
])
def test_kill_9_and_rerun_ends_as_uninterrupted(data_root, finished, tmp_path, point, keep,  # noqa: F811
                                                resumed_at):
  config = config_for(data_root, **{"ckpt.keep": keep})
  path = str(tmp_path / "run")
  command = [os.path.join(REPO, "launch", "main.py"), "--config=configs/base.py",
             f"--workdir={path}", *cli_args(config)]
  env = {k: v for k, v in os.environ.items() if k != checkpoint.KILL_ENV}
  if point.startswith("orbax:"):
    killed = [sys.executable, "-c", _KILL_IN_ORBAX, *command]
  else:
    killed, env[checkpoint.KILL_ENV] = [sys.executable, *command], point
  res = subprocess.run(killed, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert res.returncode == -signal.SIGKILL, res.stderr[-3000:]
  assert not os.path.exists(os.path.join(path, "summary.json"))
  if point.startswith("orbax:"):
    assert glob.glob(os.path.join(path, "checkpoints", "3.orbax-checkpoint-tmp*"))
    assert not os.path.exists(os.path.join(path, "checkpoints", "3"))

  env.pop(checkpoint.KILL_ENV, None)
  res = subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=600)
  assert res.returncode == 0, res.stderr[-3000:]
  assert f"at round {resumed_at}\n" in res.stderr, res.stderr[-3000:]
  assert log_without_clock(path) == finished[2]
  assert summary_without_clock(path) == summary_without_clock(finished[0])
  template = experiment.build(config).initial_state()
  ckpt = checkpoint.Checkpointer(os.path.join(path, "checkpoints"), max_to_keep=keep)
  assert ckpt.latest_round() == ROUNDS
  chex.assert_trees_all_equal(jax.device_get(ckpt.restore(template)), finished[1])
  assert not glob.glob(os.path.join(path, "checkpoints", "*tmp*"))  # the torn save cleaned up


def test_keys_added_since_the_run_are_no_difference_at_their_defaults(tmp_path):
  """A run written before a key existed resumes while the key stays at its default."""
  from fedjax_med.workdir import WorkdirError, check_identity

  old = {"fl": {"rounds": 3}}
  (tmp_path / "config.json").write_text(json.dumps(old))
  defaults = {"fl": {"rounds": 30, "dropout_rate": 0.0}, "privacy": {"level": "none"}}
  new = {"fl": {"rounds": 3, "dropout_rate": 0.0}, "privacy": {"level": "none"}}
  check_identity(str(tmp_path), new, defaults)  # only added keys, at their defaults
  with pytest.raises(WorkdirError, match="privacy.level"):
    check_identity(str(tmp_path), {**new, "privacy": {"level": "record"}}, defaults)
  with pytest.raises(WorkdirError, match="fl.rounds"):
    check_identity(str(tmp_path), {**new, "fl": {"rounds": 4, "dropout_rate": 0.0}}, defaults)
  with pytest.raises(WorkdirError, match="dropout_rate"):
    check_identity(str(tmp_path), new)  # without the defaults: every added key differs
