"""The command-line entry point: exit codes and messages (subprocess, as a user runs it)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedjax_med.data import synthetic
from tests import testing

REPO = Path(__file__).resolve().parents[1]


def run(*args, env=None):
  return subprocess.run(
      [sys.executable, str(REPO / "launch" / "main.py"), *args],
      capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=600,
  )


def test_typo_in_config_key_exits_2_without_output(tmp_path):
  res = run("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            "--config.fl.clent_lr=0.1")
  assert res.returncode == 2, res.stderr
  assert "client_lr" in res.stderr and "Traceback" not in res.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("data,match", [
    ("missing", "pneumoniamnist.npz not found"),
    ("huge_shape", r"train_images.npy declares shape \(1000000000000, 28, 28\)"),
])
def test_bad_data_exits_2_with_one_line(tmp_path, data, match):
  root = tmp_path / "data"
  if data == "huge_shape":  # 784 TB declared in the .npy header: refused before loading
    root.mkdir()
    testing.write_npz_declaring(root / "pneumoniamnist.npz", synthetic.make_arrays(
        n_train=12, n_val=4, n_test=6), "train_images", shape=(10**12, 28, 28))
  res = run("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            f"--config.data.root={root}", "--config.data.download=False",
            "--config.data.verify_md5=False")
  assert res.returncode == 2, res.stderr
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
  assert re.search(match, res.stderr) and "zenodo" in res.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_main_command_runs_end_to_end_with_overrides(tmp_path):
  synthetic.write_npz(tmp_path / "data" / "breastmnist.npz", name="breastmnist", n_train=120,
                      n_val=30, n_test=30)
  res = run("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            f"--config.data.root={tmp_path / 'data'}", "--config.data.name=breastmnist",
            "--config.data.verify_md5=False", "--config.model.name=cnn_tiny",
            "--config.fl.rounds=2", "--config.fl.local_steps=2", "--config.fl.num_clients=3",
            "--config.fl.clients_per_round=3", "--config.partition.min_size=2")
  assert res.returncode == 0, res.stderr
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["rounds_completed"] == 2 and summary["dataset"] == "breastmnist"
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["fl"]["rounds"] == 2 and config["model"]["name"] == "cnn_tiny"


@pytest.mark.slow
def test_quickstart_runs_multi_label_chestmnist_with_only_the_dataset_changed(tmp_path):
  """The quickstart (Dirichlet label skew, per-site evaluation) on synthetic ChestMNIST: 14
  findings at prevalence 0.2, each with its own blob; only a tiny model and a short run."""
  synthetic.write_npz(tmp_path / "data" / "chestmnist.npz", name="chestmnist", n_train=400,
                      n_val=60, n_test=100)
  res = run("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            f"--config.data.root={tmp_path / 'data'}", "--config.data.name=chestmnist",
            "--config.data.verify_md5=False", "--config.model.name=cnn_tiny",
            "--config.fl.rounds=10", "--config.fl.local_steps=5", "--config.fl.num_clients=4",
            "--config.fl.clients_per_round=4", "--config.fl.batch_size=32",
            "--config.fl.client_lr=0.5", "--config.partition.min_size=2", "--config.eval.every=5")
  assert res.returncode == 0, res.stderr[-3000:]
  run_dir = tmp_path / "run"
  summary = json.loads((run_dir / "summary.json").read_text())
  assert summary["dataset"] == "chestmnist" and summary["rounds_completed"] == 10
  for split in ("val", "test"):  # the single-label keys, MedMNIST's multi-label ACC and AUC
    assert set(summary[split]) == {"loss", "accuracy", "auc"}
    assert 0.0 <= summary[split]["accuracy"] <= 1.0 and 0.0 < summary[split]["loss"] < 1.0
  assert summary["test"]["auc"] > 0.6, summary["test"]  # learned: chance is 0.5
  assert summary["sites"]["auc"]["undefined_sites"] == 0
  assert 0.0 <= summary["sites"]["balanced_accuracy"]["mean"] <= 1.0
  assert summary["heterogeneity"]["label_tv_mean"] > 0  # Dirichlet skew on the label summary
  part = json.loads((run_dir / "partition.json").read_text())
  assert len(part["label_histogram"][0]) == 15 and len(part["finding_histogram"][0]) == 14
  test = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
          if r["split"] == "test"][-1]
  assert len(test["recall"]) == 14 and test["auc_undefined_labels"] == 0


@pytest.mark.slow
def test_preset_study_runs_presets_and_tabulates(tmp_path):
  """configs/comm.py's presets as the one-axis study configs/studies/comm_presets.py."""
  synthetic.write_npz(tmp_path / "data" / "pneumoniamnist.npz", name="pneumoniamnist",
                      n_train=120, n_val=30, n_test=30)
  overrides = [f"--override=data.root={tmp_path / 'data'}", "--override=data.verify_md5=False",
               "--override=model.name=cnn_tiny", "--override=fl.rounds=1",
               "--override=fl.local_steps=1", "--override=partition.min_size=2"]
  study = "--study=configs/studies/comm_presets.py:cpu"
  sweep_dir = tmp_path / "sweep"
  res = subprocess.run(
      [sys.executable, str(REPO / "launch" / "sweep.py"), study, r"--only=^preset-(none|q8)\+",
       f"--workdir={sweep_dir}", *overrides],
      capture_output=True, text=True, cwd=REPO, timeout=600,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  manifest = json.loads((sweep_dir / "sweep.json").read_text())
  assert [(r["name"], r["status"]) for r in manifest["runs"]] == [
      ("preset-none+seed-0", "done"), ("preset-q8+seed-0", "done")]
  none, q8 = (json.loads((sweep_dir / n / "summary.json").read_text())
              for n in ("preset-none+seed-0", "preset-q8+seed-0"))
  assert q8["total_bytes_up"] < none["total_bytes_up"] / 3  # 8 bits vs 32
  res = subprocess.run(
      [sys.executable, str(REPO / "analysis" / "study_report.py"), study,
       f"--workdir={sweep_dir}", f"--output={tmp_path / 'comm.md'}"],
      capture_output=True, text=True, cwd=REPO, timeout=600,
  )
  assert res.returncode == 0, res.stderr[-2000:]
  text = (tmp_path / "comm.md").read_text()
  assert "| preset | test acc |" in text and "| q8 |" in text
