"""Evaluation (fedjax_med/evaluation.py) and per-site held-out shares against obvious references."""

import jax
import numpy as np
import pytest

from fedjax_med import errors, evaluation, models, tasks
from fedjax_med.data import synthetic
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


def reference_multi_label(probs, labels):
  """MedMNIST's multi-label metrics, one label and one example at a time."""
  n, num_labels = labels.shape
  acc, balanced, recall, aucs = [], [], [], []
  for k in range(num_labels):
    tp = sum(probs[i, k] > 0.5 and labels[i, k] == 1 for i in range(n))
    tn = sum(probs[i, k] <= 0.5 and labels[i, k] == 0 for i in range(n))
    pos = sum(labels[i, k] == 1 for i in range(n))
    neg = n - pos
    acc.append((tp + tn) / n)
    rates = ([tp / pos] if pos else []) + ([tn / neg] if neg else [])
    balanced.append(sum(rates) / len(rates))
    recall.append(tp / pos if pos else None)
    if pos and neg:  # AUC: P(a positive outscores a negative), ties 1/2
      wins = sum((probs[i, k] > probs[j, k]) + 0.5 * (probs[i, k] == probs[j, k])
                 for i in range(n) if labels[i, k] for j in range(n) if not labels[j, k])
      aucs.append(wins / (pos * neg))
  return {"accuracy": sum(acc) / num_labels, "balanced_accuracy": sum(balanced) / num_labels,
          "recall": recall, "auc": sum(aucs) / len(aucs),
          "auc_undefined_labels": num_labels - len(aucs)}


def test_multi_label_metrics_match_a_loop():
  rng = np.random.default_rng(3)
  labels = (rng.random((40, 5)) < [0.3, 0.5, 0.0, 1.0, 0.1]).astype(np.int32)  # 2: no positive,
  probs = np.clip(0.6 * labels + rng.uniform(-0.1, 0.5, labels.shape), 0, 1)  # 3: no negative
  probs = np.round(probs, 1)  # ties, and exactly 0.5 (predicted negative)
  got = evaluation.class_metrics(probs, labels)
  want = reference_multi_label(probs, labels)
  assert got.keys() == want.keys()
  for key in ("accuracy", "balanced_accuracy", "auc"):
    assert got[key] == pytest.approx(want[key]), key
  assert got["recall"][2] is None and got["auc_undefined_labels"] == 2
  assert got["recall"] == pytest.approx(want["recall"])


def test_multi_label_site_metrics_and_summary():
  labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0], [0, 1]])
  probs = np.array([[0.9, 0.2], [0.4, 0.8], [0.6, 0.3], [0.1, 0.7], [0.2, 0.1], [0.3, 0.9]])
  sites = Partition.from_lists([np.array([0, 1, 2]), np.array([3, 4, 5])])
  images = np.arange(6)[:, None]
  per_site = evaluation.site_metrics(lambda c, x: probs[x[:, 0]], images, labels, sites)
  for c in range(2):
    idx = sites.client(c)
    want = reference_multi_label(probs[idx], labels[idx])
    assert per_site[c]["accuracy"] == pytest.approx(want["accuracy"])
    assert per_site[c]["auc"] == pytest.approx(want["auc"])
  summary = evaluation.summarize_sites(per_site)
  assert summary["auc"]["mean"] == pytest.approx(np.mean([s["auc"] for s in per_site]))


def test_evaluator_on_multi_label_data_uses_sigmoid_probabilities():
  ds = synthetic.make_dataset("chestmnist", n_train=30, n_val=8, n_test=20)
  model = models.get_model("cnn_tiny", ds.num_classes)
  params = tasks.init_variables(model, jax.random.PRNGKey(0), ds.image_shape)
  sites = Partition.from_lists([np.arange(0, 6), np.arange(6, 10)])
  ev = evaluation.Evaluator(model, ds, sites, batch_size=8)  # 20 = 8 + 8 + 4 padded
  res = ev.splits(params, names=("test",))["test"]
  logits = np.asarray(tasks.make_predict_fn(model)(params, ds.test.images), np.float64)
  probs = 1 / (1 + np.exp(-logits))
  want = reference_multi_label(probs, ds.test.labels)
  assert res["accuracy"] == pytest.approx(want["accuracy"], rel=1e-5)
  assert res["auc"] == pytest.approx(want["auc"], rel=1e-4)
  assert res["auc_undefined_labels"] == want["auc_undefined_labels"]
  assert len(res["recall"]) == 14
  site = ev.sites(lambda c: params)
  assert site["sizes"] == [6, 4] and len(site["recall"][0]) == 14
  got = evaluation.class_metrics(probs[:0], ds.test.labels[:0])  # no examples: nothing defined
  assert got["auc"] is None
  train_probs = 1 / (1 + np.exp(-np.asarray(tasks.make_predict_fn(model)(
      params, ds.train.images[:6]), np.float64)))
  assert site["accuracy"]["per_site"][0] == pytest.approx(
      reference_multi_label(train_probs, ds.train.labels[:6])["accuracy"], abs=1e-5)


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
