"""The README's quickstart command on the official PneumoniaMNIST file (skipped without it)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import quickstart, quickstart_centralized
from tests import testing

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.realdata
@pytest.mark.slow
def test_quickstart_reaches_target_accuracy(tmp_path):
  root = testing.require("pneumoniamnist.npz")
  # Exactly the README command, on one CPU device (not the 8 fake test devices).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  res = subprocess.run(
      [sys.executable, "launch/main.py", "--config=configs/quickstart.py",
       f"--workdir={tmp_path}", f"--config.data.root={root}", "--config.data.download=False"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
  )
  assert res.returncode == 0, res.stderr[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["rounds_completed"] == quickstart.get_config().fl.rounds
  assert summary["test"]["accuracy"] >= 0.82, summary["test"]
  assert summary["test"]["auc"] >= 0.92, summary["test"]


def test_centralized_counterpart_spends_the_same_sample_gradients():
  fed, central = quickstart.get_config(), quickstart_centralized.get_config()
  per_round = lambda c: c.fl.clients_per_round * c.fl.local_steps * c.fl.batch_size  # noqa: E731
  assert per_round(fed) == per_round(central)
  assert fed.fl.rounds == central.fl.rounds and fed.model.name == central.model.name
  assert fed.data.augment == central.data.augment
  assert central.algorithm.name == "centralized" and central.fl.clients_per_round == 1
  # The same sites (partition and held-out shares) as the federated run: pooled for training.
  assert central.fl.num_clients == fed.fl.num_clients
  assert central.partition.to_dict() == fed.partition.to_dict()
  assert central.eval.site_holdout == fed.eval.site_holdout
