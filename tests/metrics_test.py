"""ROC-AUC against the brute-force pairwise definition; eval metrics with padding."""

import json

import numpy as np
import pytest

from fedjax_med import metrics


def pairwise_auc(scores, positive):
  pos, neg = scores[positive], scores[~positive]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
  return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_roc_auc_matches_pairwise_definition_with_ties(seed):
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, 6, 80) / 5.0  # many ties
  positive = rng.random(80) < 0.4
  assert metrics.roc_auc(scores, positive) == pytest.approx(pairwise_auc(scores, positive))


def test_auc_edge_cases_and_multiclass():
  assert metrics.roc_auc(np.array([0.1, 0.9]), np.array([False, True])) == 1.0
  assert np.isnan(metrics.roc_auc(np.array([0.1, 0.9]), np.array([True, True])))
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3), size=50)
  labels = rng.integers(0, 3, 50)
  expected = np.mean([pairwise_auc(probs[:, k], labels == k) for k in range(3)])
  assert metrics.auc(probs, labels) == pytest.approx(expected)


def test_eval_batch_metrics_ignore_padding():
  logits = np.array([[2.0, 0.0], [0.0, 2.0], [5.0, -5.0]], np.float32)
  labels = np.array([0, 0, 1])
  m = metrics.eval_batch_metrics(logits, labels, np.array([True, True, False])).compute()
  assert float(m["accuracy"]) == pytest.approx(0.5)
  ce = -np.log(np.exp(2) / (np.exp(2) + 1)), -np.log(1 / (np.exp(2) + 1))
  assert float(m["loss"]) == pytest.approx(np.mean(ce), rel=1e-5)


def test_jsonl_truncate_after(tmp_path):
  w = metrics.JsonlWriter(str(tmp_path / "m.jsonl"))
  for r in range(1, 5):
    w.write({"round": r, "split": "train", "loss": np.float32(r)})
  w.truncate_after(2)
  assert [x["round"] for x in metrics.read_jsonl(w.path)] == [1, 2]
  json.dumps(metrics.read_jsonl(w.path))
