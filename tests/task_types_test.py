"""Every MedMNIST task type through the quickstart command with only the dataset changed.

Binary, multi-class, ordinal (RetinaMNIST, scored as 5 classes as MedMNIST does) and
multi-label (ChestMNIST) images, and binary / multi-class 3D volumes: synthetic files of
the official layouts, the README's quickstart config, ``--config.data.name`` and a run
small enough for a test. The default ``model.name=""`` must pick the 2D or the 3D CNN.
"""

import json
import math

import pytest

from fedjax_med.data import registry, synthetic
from tests.launch_test import run

SMALL_RUN = ("--config.fl.rounds=2", "--config.fl.local_steps=1", "--config.fl.batch_size=8",
             "--config.fl.num_clients=2", "--config.fl.clients_per_round=2",
             "--config.partition.min_size=2", "--config.eval.every=1",
             "--config.data.verify_md5=False", "--config.data.download=False")

TASK_TYPES = [
    pytest.param("pneumoniamnist", id="binary", marks=pytest.mark.slow),
    pytest.param("bloodmnist", id="multi-class", marks=pytest.mark.slow),
    pytest.param("retinamnist", id="ordinal", marks=pytest.mark.slow),
    pytest.param("chestmnist", id="multi-label", marks=pytest.mark.slow),
    pytest.param("adrenalmnist3d", id="3d-binary"),
    pytest.param("organmnist3d", id="3d-multi-class", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", TASK_TYPES)
def test_quickstart_runs_every_task_type(tmp_path, name):
  info = registry.get_info(name)
  synthetic.write_npz(tmp_path / "data" / info.filename(28), name=name, n_train=48, n_val=16,
                      n_test=24)
  res = run("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            f"--config.data.root={tmp_path / 'data'}", f"--config.data.name={name}", *SMALL_RUN)
  assert res.returncode == 0, res.stderr[-3000:]
  config = json.loads((tmp_path / "run" / "config.json").read_text())
  assert config["model"]["name"] == ("cnn3d" if info.dims == 3 else "cnn")
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  assert summary["dataset"] == name and summary["rounds_completed"] == 2
  test = summary["test"]
  assert math.isfinite(test["loss"]) and 0.0 <= test["accuracy"] <= 1.0
  assert test["auc"] is not None and 0.0 <= test["auc"] <= 1.0
  assert summary["sites"]["balanced_accuracy"]["mean"] is not None
  records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
  recall = [r for r in records if r["split"] == "test"][-1]["recall"]
  assert len(recall) == info.num_classes  # one recall per class (per finding: ChestMNIST)


def test_2d_model_on_volumes_exits_2_naming_the_3d_models(tmp_path):
  synthetic.write_npz(tmp_path / "data" / "adrenalmnist3d.npz", name="adrenalmnist3d",
                      n_train=24, n_val=8, n_test=8)
  res = run("--config=configs/quickstart.py", f"--workdir={tmp_path / 'run'}",
            f"--config.data.root={tmp_path / 'data'}", "--config.data.name=adrenalmnist3d",
            "--config.model.name=resnet8", *SMALL_RUN)
  assert res.returncode == 2, res.stderr[-3000:]
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
  assert "cnn3d" in res.stderr and "resnet18_3d" in res.stderr
  assert not (tmp_path / "run").exists()
