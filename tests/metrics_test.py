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


def test_multi_label_auc_is_the_mean_of_defined_per_label_aucs():
  rng = np.random.default_rng(1)
  probs = rng.integers(0, 5, (60, 4)) / 4.0  # ties
  labels = (rng.random((60, 4)) < [0.5, 0.2, 0.0, 0.7]).astype(np.int32)  # label 2: no positive
  per_label = metrics.per_label_auc(probs, labels)
  for k in (0, 1, 3):
    assert per_label[k] == pytest.approx(pairwise_auc(probs[:, k], labels[:, k] == 1))
  assert np.isnan(per_label[2])
  want = np.mean([pairwise_auc(probs[:, k], labels[:, k] == 1) for k in (0, 1, 3)])
  assert metrics.auc(probs, labels) == pytest.approx(want)
  assert np.isnan(metrics.auc(probs[:, :2], np.zeros((60, 2), np.int32)))


def test_multi_label_eval_batch_metrics_match_a_loop():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(5, 3)).astype(np.float32)
  labels = (rng.random((5, 3)) < 0.5).astype(np.int32)
  mask = np.array([True, True, True, False, True])
  m = metrics.eval_batch_metrics(logits, labels, mask, multi_label=True).compute()
  bce, acc = [], []
  for i in np.flatnonzero(mask):
    p = 1 / (1 + np.exp(-logits[i].astype(np.float64)))
    bce.append(np.mean([-np.log(p[k]) if labels[i, k] else -np.log(1 - p[k]) for k in range(3)]))
    acc.append(np.mean([(p[k] > 0.5) == labels[i, k] for k in range(3)]))
  assert float(m["loss"]) == pytest.approx(np.mean(bce), rel=1e-5)
  assert float(m["accuracy"]) == pytest.approx(np.mean(acc))


def test_jsonl_truncate_after(tmp_path):
  w = metrics.JsonlWriter(str(tmp_path / "m.jsonl"))
  for r in range(1, 5):
    w.write({"round": r, "split": "train", "loss": np.float32(r)})
  w.truncate_after(2)
  assert [x["round"] for x in metrics.read_jsonl(w.path)] == [1, 2]
  json.dumps(metrics.read_jsonl(w.path))
