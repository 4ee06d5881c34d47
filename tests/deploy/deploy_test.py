"""A deployed run over loopback (SuperLink + K SuperNodes as processes) equals the simulation.

Tolerance: rtol 1e-5, atol 1e-6 on the final server params (float32; the server sums
the clients in another order than the simulation's chunks, and one client runs
unvmapped). Every process is started in its own group and ended in a ``finally``.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

pytest.importorskip("flwr", reason="the deploy extra (pip install -e '.[deploy]') is absent")

from fedjax_med import train  # noqa: E402
from fedjax_med.deploy import federation, launch, rounds, split  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = '''
from fedjax_med.configs import base


def get_config():
  return base.apply(base.get_config(), {{
      "data.root": "{root}", "data.download": False, "data.verify_md5": False,
      "model.name": "cnn_tiny", "partition.kind": "iid", "partition.min_size": 5,
      "fl.rounds": 2, "fl.num_clients": 3, "fl.clients_per_round": 2, "fl.local_steps": 2,
      "fl.batch_size": 8, "eval.every": 1, "eval.batch_size": 32, "ckpt.every": 1,
      "log.progress": "none"}})
'''
K = 3


def _python(*args):
  return [sys.executable, "-m", *args]


def _env(tmp_path):
  return {**os.environ, "PYTHONPATH": str(REPO), "FLWR_HOME": str(tmp_path / "flwr")}


@pytest.fixture
def federation_files(tmp_path):
  from fedjax_med.data import synthetic

  synthetic.write_npz(tmp_path / "data" / "pneumoniamnist.npz", name="pneumoniamnist",
                      n_train=120, n_val=30, n_test=30)
  (tmp_path / "tiny.py").write_text(CONFIG.format(root=tmp_path / "data"))
  return tmp_path


def _deploy(tmp_path, overrides, *, kill_site=None, round_timeout=120.0, mismatched=None):
  """Runs the whole deployment; returns (server exit code, workdir).

  ``mismatched``: extra ``--config.*`` overrides of one more site (client 0) that starts
  first; the server must refuse it (its config hash differs) before the others start.
  Returns also that site's (exit code, log) then."""
  config = str(tmp_path / "tiny.py")
  assert split.main([f"--config={config}", f"--out={tmp_path / 'sites'}", *overrides]) == 0
  port = launch.free_port()
  address = f"127.0.0.1:{port}"
  env = _env(tmp_path)
  procs = []
  try:
    procs.append(launch.start(["flower-superlink", "--insecure", "--port", str(port),
                               "--disable-runtime-dependency-installation"],
                              str(tmp_path / "superlink.log"), env=env))
    assert launch.reachable(address, timeout=60)
    refused = None
    if mismatched is not None:
      odd = launch.start(
          _python("fedjax_med.deploy.site", f"--config={config}",
                  f"--data={split.site_path(str(tmp_path / 'sites'), 0)}", "--client_id=0",
                  f"--superlink={address}", "--insecure", *overrides, *mismatched),
          str(tmp_path / "mismatched.log"), env=env)
      procs.append(odd)
      server = _start_server(tmp_path, config, address, round_timeout, overrides, env)
      procs.append(server)
      refused = (odd.wait(timeout=300), _read(tmp_path / "mismatched.log"))
    sites = [launch.start(
        _python("fedjax_med.deploy.site", f"--config={config}",
                f"--data={split.site_path(str(tmp_path / 'sites'), c)}", f"--client_id={c}",
                f"--superlink={address}", "--insecure", *overrides),
        str(tmp_path / f"site{c}.log"), env=env) for c in range(K)]
    procs.extend(sites)
    if mismatched is None:
      server = _start_server(tmp_path, config, address, round_timeout, overrides, env)
      procs.append(server)
    if kill_site is not None:  # kill the site once round 1 is done: round 2 misses it
      deadline = time.time() + 200
      metrics = tmp_path / "deployed" / "metrics.jsonl"
      while time.time() < deadline and not _read(metrics).strip():
        time.sleep(0.2)
      launch.stop_group(sites[kill_site], timeout=1)
    code = server.wait(timeout=420)
    return (code, tmp_path / "deployed") + ((refused,) if mismatched is not None else ())
  finally:
    for p in reversed(procs):
      launch.stop_group(p)
    assert not [p for p in procs if p.poll() is None]


def _start_server(tmp_path, config, address, round_timeout, overrides, env):
  return launch.start(
      _python("fedjax_med.deploy.server", f"--config={config}",
              f"--workdir={tmp_path / 'deployed'}", f"--superlink={address}", "--insecure",
              f"--round_timeout={round_timeout}", *overrides),
      str(tmp_path / "server.log"), env=env)


def _read(path):
  return path.read_text() if path.exists() else ""


def _deployed_params(workdir, template):
  with np.load(workdir / "params.npz") as f:
    return rounds.from_arrays(template, [f[k] for k in sorted(f.files)])


DP = ["--config.privacy.level=client", "--config.privacy.noise_multiplier=0.5",
      "--config.privacy.clip_norm=0.1"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm,dp", [("fedavg", False), ("scaffold", False),
                                          ("fedavg", True)])
def test_deployed_run_equals_the_simulation(federation_files, algorithm, dp):
  """FedAvg, SCAFFOLD (its c_i kept at the sites) and DP-FedAvg (client-level DP: Poisson
  sampling, the sites clip, the server noises)."""
  tmp_path = federation_files
  overrides = [f"--config.algorithm.name={algorithm}", *(DP if dp else [])]
  code, workdir = _deploy(tmp_path, overrides)
  assert code == 0, _read(tmp_path / "server.log")[-3000:]
  config = federation.load_config(str(tmp_path / "tiny.py"), overrides)
  simulated = train.train_and_evaluate(config, str(tmp_path / "simulated"))
  deployed = _deployed_params(workdir, jax.device_get(simulated.params))
  chex.assert_trees_all_close(deployed, jax.device_get(simulated.params), rtol=1e-5, atol=1e-6)
  import json

  summary = json.loads((workdir / "summary.json").read_text())
  sim = json.loads((tmp_path / "simulated" / "summary.json").read_text())
  assert summary["rounds_completed"] == 2 and summary["sites"] == [0, 1, 2]
  if dp:  # the simulation counts the expected cohort's bytes, the deployment the real one
    assert summary["privacy"]["epsilon"] == pytest.approx(sim["privacy"]["epsilon"])
    return
  assert summary["total_bytes_up"] == sim["total_bytes_up"]
  if algorithm == "fedavg":  # SCAFFOLD also downloads c, which the simulation does not count
    assert summary["total_bytes_down"] == sim["total_bytes_down"]


@pytest.mark.slow
def test_a_mismatched_site_is_refused_a_killed_one_dropped_and_the_run_finishes(
    federation_files):
  tmp_path = federation_files
  overrides = ["--config.fl.rounds=3", "--config.fl.clients_per_round=3"]
  code, workdir, (refused_code, refused_log) = _deploy(
      tmp_path, overrides, kill_site=1, round_timeout=30.0,
      mismatched=["--config.fl.client_lr=0.2"])
  assert code == 0, _read(tmp_path / "server.log")[-3000:]
  # The site whose config differs from the server's: one line, exit 2.
  assert refused_code == 2, refused_log[-2000:]
  assert "config" in refused_log.strip().splitlines()[-1], refused_log[-2000:]
  import json

  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["rounds_completed"] == 3 and summary["lost_sites"] == [1]
  records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["answered"] == 2


def _refused(res, tmp_path):
  assert res.returncode == 2, res.stderr
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr


def test_bad_site_data_unreachable_server_and_bad_config_exit_2(federation_files):
  tmp_path = federation_files
  config = str(tmp_path / "tiny.py")
  bad = tmp_path / "bad.npz"
  rng = np.random.default_rng(0)
  arrays = {f"{s}_images": rng.integers(0, 255, (4, 32, 32), dtype=np.uint8)
            for s in ("train", "val", "test")}
  arrays.update({f"{s}_labels": np.zeros((4, 1), np.int64) for s in ("train", "val", "test")})
  np.savez(bad, **arrays)
  env = _env(tmp_path)
  port = launch.free_port()  # nothing listens there
  base = ["fedjax_med.deploy.site", f"--config={config}", "--client_id=0",
          f"--superlink=127.0.0.1:{port}", "--insecure"]
  res = subprocess.run(_python(*base, f"--data={bad}"), capture_output=True, text=True,
                       env=env, timeout=120)
  _refused(res, tmp_path)
  assert "shape" in res.stderr
  assert split.main([f"--config={config}", f"--out={tmp_path / 'sites'}"]) == 0
  good = split.site_path(str(tmp_path / "sites"), 0)
  res = subprocess.run(_python(*base, f"--data={good}"), capture_output=True, text=True,
                       env=env, timeout=120)
  _refused(res, tmp_path)
  assert "does not answer" in res.stderr
  res = subprocess.run(_python(*base, f"--data={good}", "--config.fl.nope=1"),
                       capture_output=True, text=True, env=env, timeout=120)
  _refused(res, tmp_path)
  res = subprocess.run(_python("fedjax_med.deploy.server", f"--config={config}",
                               f"--workdir={tmp_path / 'w'}", f"--superlink=127.0.0.1:{port}",
                               "--insecure"), capture_output=True, text=True, env=env,
                       timeout=120)
  _refused(res, tmp_path)
  assert not (tmp_path / "w").exists()


def test_config_hash_ignores_machine_local_keys_only(federation_files):
  config = federation.load_config(str(federation_files / "tiny.py"))
  other = federation.load_config(str(federation_files / "tiny.py"),
                                 ["--config.data.root=/elsewhere"])
  assert federation.config_hash(config) == federation.config_hash(other)
  changed = federation.load_config(str(federation_files / "tiny.py"), ["--config.fl.client_lr=0.2"])
  assert federation.config_hash(config) != federation.config_hash(changed)


@pytest.mark.parametrize("overrides,match", [
    (["--config.privacy.level=record", "--config.privacy.noise_multiplier=1.0"],
     "record-level DP"),
    (DP + ["--config.comm.compressor=topk"], "uncompressed"),
    (["--config.attack.kind=sign_flip", "--config.attack.fraction=0.34"], "simulation-only"),
])
def test_what_is_not_deployed_is_refused(federation_files, overrides, match):
  from fedjax_med import errors

  config = federation.load_config(str(federation_files / "tiny.py"), overrides)
  with pytest.raises(errors.ConfigError, match=match):
    federation.build(config)


def test_client_level_dp_builds_without_data(federation_files):
  fed = federation.build(federation.load_config(str(federation_files / "tiny.py"), DP))
  assert fed.privacy is not None and fed.plan.client_dp is not None
  # the cohort is the simulation's Poisson draw
  from fedjax_med import experiment

  exp = experiment.build(fed.config)
  for r in range(4):
    np.testing.assert_array_equal(federation.round_clients(fed, r).client_ids,
                                  exp.sampled_ids(r))
