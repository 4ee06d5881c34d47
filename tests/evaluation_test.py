"""Evaluation (fedjax_med/evaluation.py) and per-site held-out shares against obvious references."""

import numpy as np
import pytest

from fedjax_med import errors, evaluation
from fedjax_med.partition import holdout, make_partition
from fedjax_med.partition.base import Partition


def probs_of(pred: np.ndarray, num_classes: int, confidence=0.9) -> np.ndarray:
  """One-hot-ish probabilities that predict ``pred`` (argmax) with distinct scores for AUC."""
  rng = np.random.default_rng(0)
  p = rng.uniform(0, 0.1, (len(pred), num_classes))
  p[np.arange(len(pred)), pred] = confidence + rng.uniform(0, 0.05, len(pred))
  return p / p.sum(axis=1, keepdims=True)


def test_class_metrics_match_a_loop():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 3, 50)
  pred = np.where(rng.uniform(size=50) < 0.7, labels, rng.integers(0, 3, 50))
  got = evaluation.class_metrics(probs_of(pred, 3), labels)
  recall = []
  for k in range(3):
    members = [i for i in range(50) if labels[i] == k]
    recall.append(sum(pred[i] == k for i in members) / len(members))
  assert got["accuracy"] == pytest.approx(sum(pred == labels) / 50)
  assert got["recall"] == pytest.approx(recall)
  assert got["balanced_accuracy"] == pytest.approx(sum(recall) / 3)


def test_balanced_accuracy_ignores_absent_classes_and_auc_is_none_for_one_class():
  labels = np.array([1, 1, 1, 1])
  got = evaluation.class_metrics(probs_of(np.array([1, 1, 0, 1]), 2), labels)
  assert got["recall"] == [None, 0.75] and got["balanced_accuracy"] == 0.75
  assert got["auc"] is None  # one class present: undefined, not 0 or 0.5


def test_site_metrics_and_summary():
  labels = np.array([0, 1, 0, 1, 1, 1, 0, 0, 1, 0])
  sites = Partition.from_lists([np.array([0, 1, 2]), np.array([3, 4, 5]), np.array([], int)])
  pred = np.array([0, 1, 1, 1, 0, 1, 0, 0, 1, 0])  # site 0: 2/3 right, site 1: 2/3 (all class 1)
  calls = []

  def predict_fn(site, images):
    calls.append(site)
    return probs_of(pred[images[:, 0]], 2)

  images = np.arange(10)[:, None]  # the "image" is the example index
  per_site = evaluation.site_metrics(predict_fn, images, labels, sites)
  assert calls == [0, 1]  # the empty site is not evaluated
  assert [s["n"] for s in per_site] == [3, 3, 0]
  assert per_site[0]["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
  assert per_site[1]["balanced_accuracy"] == pytest.approx(2 / 3) and per_site[1]["auc"] is None
  summary = evaluation.summarize_sites(per_site)
  acc = summary["accuracy"]
  assert acc["mean"] == pytest.approx(2 / 3) and acc["worst"] == pytest.approx(2 / 3)
  assert acc["undefined_sites"] == 1 and acc["per_site"][2] is None
  assert summary["auc"]["undefined_sites"] == 2  # site 1 (one class) and site 2 (empty)
  bal = [per_site[0]["balanced_accuracy"], per_site[1]["balanced_accuracy"]]
  assert summary["balanced_accuracy"]["spread"] == pytest.approx(np.std(bal))
  assert summary["balanced_accuracy"]["worst"] == pytest.approx(min(bal))


def test_holdout_split_is_seeded_disjoint_and_keeps_a_training_example():
  labels = np.repeat(np.arange(3), 40)
  part = make_partition("dirichlet", labels, 6, seed=3, alpha=0.5, min_size=1)
  a, b = holdout.split(part, 0.2, seed=7), holdout.split(part, 0.2, seed=7)
  np.testing.assert_array_equal(a.test.indices, b.test.indices)
  for c in range(part.num_clients):
    own, tr, te = set(part.client(c)), set(a.train.client(c)), set(a.test.client(c))
    assert tr | te == own and not tr & te and len(tr) >= 1
    n = len(own)
    assert len(te) == (0 if n < 2 else min(n - 1, max(1, round(0.2 * n))))
  other = holdout.split(part, 0.2, seed=8)
  assert not np.array_equal(a.test.indices, other.test.indices)
  none = holdout.split(part, 0.0, seed=7)
  assert none.test.sizes.sum() == 0 and np.array_equal(none.train.indices, part.indices)
  with pytest.raises(errors.ConfigError, match="site_holdout"):
    holdout.split(part, 0.95, seed=0)
