"""The README's quickstart pair on the official PneumoniaMNIST file (skipped without it)."""

import json

import pytest

from configs import quickstart, quickstart_centralized
from fedjax_med import train
from tests import realdata


@pytest.mark.realdata
@pytest.mark.slow
def test_quickstart_reaches_target_accuracy(tmp_path):
  config = quickstart.get_config()
  config.data.root = str(realdata.require("pneumoniamnist.npz"))
  config.data.download = False
  config.log.progress = "none"
  train.train_and_evaluate(config, str(tmp_path))
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["rounds_completed"] == config.fl.rounds
  assert summary["test"]["accuracy"] >= 0.82, summary["test"]
  assert summary["test"]["auc"] >= 0.92, summary["test"]


def test_centralized_counterpart_spends_the_same_sample_gradients():
  fed, central = quickstart.get_config(), quickstart_centralized.get_config()
  per_round = lambda c: c.fl.clients_per_round * c.fl.local_steps * c.fl.batch_size  # noqa: E731
  assert per_round(fed) == per_round(central)
  assert fed.fl.rounds == central.fl.rounds and fed.model.name == central.model.name
  assert central.algorithm == "centralized" and central.fl.num_clients == 1
