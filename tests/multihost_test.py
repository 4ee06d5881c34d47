"""Several processes, one run: 2 processes x 4 CPU devices on 127.0.0.1 (gloo collectives)
train exactly what 1 process x 8 devices trains, and a run killed in both processes resumes.

Every process is a ``launch/main.py`` started in its own session and killed (its whole
process group) when the test ends, whatever happens; ports are chosen free on 127.0.0.1.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from configs import base
from fedjax_med import checkpoint, experiment, metrics, train
from tests import testing

REPO = str(testing.REPO)
ROUNDS = 3
TIMEOUT_S = 300  # per launch of all processes (each needs ~15 s of imports and compiles)


def _config(data_root):
  return base.apply(base.get_config(), {
      "data.root": data_root, "data.download": False, "data.verify_md5": False,
      "model.name": "cnn_tiny", "partition.min_size": 5, "fl.rounds": ROUNDS,
      "fl.num_clients": 8, "fl.clients_per_round": 6, "fl.local_steps": 2, "fl.batch_size": 8,
      "fl.client_lr": 0.1, "eval.every": 1, "eval.batch_size": 32, "ckpt.every": 1,
      "ckpt.keep": 2, "log.progress": "none"})


def _args(config) -> list[str]:
  flat = lambda d, p="": {k2: v2 for k, v in d.items() for k2, v2 in (  # noqa: E731
      flat(v, f"{p}{k}.").items() if isinstance(v, dict) else [(f"{p}{k}", v)])}
  ours, default = flat(config.to_dict()), flat(base.get_config().to_dict())
  return [f"--config.{k}={v}" for k, v in sorted(ours.items()) if v != default.get(k)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(config, workdir, processes: int, devices: int, kill_at: str | None = None):
  """Runs the training command in ``processes`` processes of ``devices`` CPU devices each;
  returns their (returncode, stderr). Every process group is killed before returning."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", checkpoint.KILL_ENV)}
  env["PYTHONPATH"] = REPO
  if kill_at:
    env[checkpoint.KILL_ENV] = kill_at
  command = [sys.executable, os.path.join(REPO, "launch", "main.py"), "--config=configs/base.py",
             f"--workdir={workdir}", f"--cpu_devices={devices}", *_args(config)]
  if processes > 1:
    command += [f"--coordinator_address=127.0.0.1:{_free_port()}",
                f"--num_processes={processes}"]
  procs, logs = [], []
  try:
    for i in range(processes):
      extra = [f"--process_id={i}"] if processes > 1 else []
      logs.append(open(f"{workdir}.{i}.{len(os.listdir(os.path.dirname(workdir)))}.log", "w+"))
      procs.append(subprocess.Popen(command + extra, cwd=REPO, env=env, text=True,
                                    stdout=subprocess.DEVNULL, stderr=logs[-1],
                                    start_new_session=True))
    codes = [p.wait(timeout=TIMEOUT_S) for p in procs]
    out = []
    for code, f in zip(codes, logs, strict=True):
      f.seek(0)
      out.append((code, f.read()))
    return out
  finally:
    for p in procs:
      if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    for f in logs:
      f.close()


def _log(workdir) -> list[dict]:
  records = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  for r in records:
    r.pop("elapsed_s", None)
  return records


def _final_params(config, workdir):
  template = experiment.build(config).initial_state()
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"))
  assert ckpt.latest_round() == ROUNDS
  return jax.device_get(ckpt.restore(template))


def _assert_logs_close(a: list[dict], b: list[dict], rtol: float) -> None:
  assert [(r["round"], r["split"]) for r in a] == [(r["round"], r["split"]) for r in b]
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      if isinstance(x[k], float):
        np.testing.assert_allclose(x[k], y[k], rtol=rtol, atol=1e-6, err_msg=k)
      elif not isinstance(x[k], (dict, list)):
        assert x[k] == y[k], k


@pytest.mark.slow
def test_two_processes_equal_one_and_resume_after_a_kill_in_both(data_root, tmp_path):
  config = _config(data_root)
  one, two, killed = (str(tmp_path / name) for name in ("one", "two", "killed"))

  [(rc, err)] = _launch(config, one, processes=1, devices=8)
  assert rc == 0, err[-3000:]
  results = _launch(config, two, processes=2, devices=4)
  assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
  # Only process 0 writes the run's files.
  assert "test accuracy" in results[0][1] and "test accuracy" not in results[1][1]
  assert sorted(os.listdir(two)) == sorted(os.listdir(one))

  # The cross-process sum (gloo) may add the 8 devices' shares in another order than one
  # process does: equal to float rounding (measured: identical on this machine).
  chex.assert_trees_all_close(_final_params(config, two), _final_params(config, one),
                              rtol=1e-5, atol=1e-6)
  _assert_logs_close(_log(two), _log(one), rtol=1e-5)
  with open(os.path.join(two, "summary.json")) as f:
    summary = json.load(f)
  assert summary["processes"] == 2 and summary["engine"]["num_devices"] == 8

  # Killed in both processes after the round-2 checkpoint is written but before its digest:
  # both resume from round 1 and end exactly as the uninterrupted 2-process run.
  results = _launch(config, killed, processes=2, devices=4, kill_at="save:2")
  assert [rc for rc, _ in results] == [-signal.SIGKILL] * 2, results[0][1][-2000:]
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  results = _launch(config, killed, processes=2, devices=4)
  assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
  assert "at round 1\n" in results[0][1], results[0][1][-3000:]
  chex.assert_trees_all_equal(_final_params(config, killed), _final_params(config, two))
  assert _log(killed) == _log(two)


@pytest.mark.slow
def test_vectorized_seeds_across_two_processes(data_root, tmp_path):
  """runs.seeds=2 over 2 processes x 4 devices (run axis first, clients sharded) writes
  each seed's run as 1 process x 8 devices does."""
  config = _config(data_root)
  config.runs.seeds = 2
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  [(rc, err)] = _launch(config, one, processes=1, devices=8)
  assert rc == 0, err[-3000:]
  results = _launch(config, two, processes=2, devices=4)
  assert [rc for rc, _ in results] == [0, 0], results[0][1][-3000:] + results[1][1][-3000:]
  for seed in ("seed_0", "seed_1"):
    _assert_logs_close(_log(os.path.join(two, seed)), _log(os.path.join(one, seed)), rtol=1e-5)
    single = train.run_config(config, int(seed[-1]))
    chex.assert_trees_all_close(_final_params(single, os.path.join(two, seed)),
                                _final_params(single, os.path.join(one, seed)),
                                rtol=1e-5, atol=1e-6)


def test_a_process_id_outside_the_run_exits_2(tmp_path):
  res = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "main.py"), "--config=configs/quickstart.py",
       f"--workdir={tmp_path / 'run'}", "--coordinator_address=127.0.0.1:1",
       "--num_processes=2", "--process_id=2"],
      capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ,
                                                                   "PYTHONPATH": REPO})
  assert res.returncode == 2, res.stderr
  assert res.stderr.startswith("error: --process_id=2") and res.stderr.count("\n") == 1
  assert not (tmp_path / "run").exists()


def test_an_unreachable_coordinator_exits_2(tmp_path):
  res = subprocess.run(
      [sys.executable, os.path.join(REPO, "launch", "main.py"), "--config=configs/quickstart.py",
       f"--workdir={tmp_path / 'run'}", f"--coordinator_address=127.0.0.1:{_free_port()}",
       "--num_processes=2", "--process_id=1", "--distributed_timeout_s=2"],
      capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ,
                                                                   "PYTHONPATH": REPO})
  assert res.returncode == 2, res.stderr
  assert res.stderr.startswith("error: cannot join the multi-process run: the coordinator "
                               "127.0.0.1:"), res.stderr
  assert res.stderr.count("\n") == 1 and not (tmp_path / "run").exists()
