"""Tests of partition.heterogeneity against a slow, obvious per-client loop."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest

from fedjax_med import partition


def reference_heterogeneity(p: partition.Partition, labels, num_classes: int) -> dict:
  """One client at a time, one example at a time, in plain Python."""
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if labels.ndim == 2:  # multi-hot: 0 = no finding, 1 + the rarest finding (fewest positives)
    positives = [int(labels[:, k].sum()) for k in range(num_classes)]
    summary = []
    for row in labels:
      found = [k for k in range(num_classes) if row[k]]
      summary.append(0 if not found else 1 + min(found, key=lambda k: (positives[k], k)))
    labels, num_classes = np.asarray(summary), num_classes + 1
  hists = []
  for c in range(p.num_clients):
    counts = [0] * num_classes
    for j in p.client(c):
      counts[int(labels[j])] += 1
    hists.append(counts)
  total = sum(sum(h) for h in hists)
  p_global = [sum(h[k] for h in hists) / total for k in range(num_classes)]

  def effective(mix):
    return math.exp(-sum(q * math.log(q) for q in mix if q > 0))

  tvs, effs = [], []
  for h in hists:
    if sum(h) == 0:
      continue  # no labels: no mix
    mix = [x / sum(h) for x in h]
    tvs.append(0.5 * sum(abs(mix[k] - p_global[k]) for k in range(num_classes)))
    effs.append(effective(mix))
  sizes = [len(p.client(c)) for c in range(p.num_clients)]
  return {
      "label_tv_mean": sum(tvs) / len(tvs),
      "label_tv_max": max(tvs),
      "effective_classes_mean": sum(effs) / len(effs),
      "effective_classes_min": min(effs),
      "global_effective_classes": effective(p_global),
      "size_cv": statistics.pstdev(sizes) / statistics.mean(sizes),
  }


def _random_partition(num_examples: int, num_clients: int, seed: int) -> partition.Partition:
  """Random owners, client 0 always empty (it must drop out of the label measures)."""
  owner = np.random.default_rng(seed).integers(1, num_clients, num_examples)
  return partition.Partition.from_assignment(owner, num_clients)


LABELS = np.random.default_rng(0).choice(4, size=300, p=[0.6, 0.25, 0.1, 0.05])

CASES = [
    ("dirichlet 0.1", lambda: partition.dirichlet(LABELS, 8, 0.1, seed=0)),
    ("dirichlet 10", lambda: partition.dirichlet(LABELS, 8, 10.0, seed=1)),
    ("shards", lambda: partition.shards(LABELS, 6, 1, seed=0)),
    ("quantity", lambda: partition.quantity(len(LABELS), 9, seed=0, sigma=1.5)),
    ("random, empty client", lambda: _random_partition(len(LABELS), 7, seed=2)),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("layout", ["[N]", "[N, 1]"])
def test_matches_reference_loop(name, make, layout):
  del name
  p = make()
  labels = LABELS if layout == "[N]" else LABELS[:, None].astype(np.uint8)
  got = partition.heterogeneity(p, labels, 4)
  want = reference_heterogeneity(p, labels, 4)
  assert got.keys() == want.keys()
  for key, value in want.items():
    assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_matches_reference_loop_multi_label():
  labels = (np.random.default_rng(1).random((120, 3)) < [0.5, 0.2, 0.05]).astype(np.int64)
  p = _random_partition(len(labels), 5, seed=3)
  got = partition.heterogeneity(p, labels, 3)
  want = reference_heterogeneity(p, labels, 3)
  for key, value in want.items():
    assert got[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_extremes():
  labels = np.array([0, 0, 1, 1])
  # Single-class clients: 1 effective class each, TV = 0.5 from the 50/50 global mix.
  h = partition.heterogeneity(partition.Partition.from_lists([[0, 1], [2, 3]]), labels, 2)
  assert h["label_tv_mean"] == h["label_tv_max"] == pytest.approx(0.5)
  assert h["effective_classes_mean"] == h["effective_classes_min"] == pytest.approx(1.0)
  assert h["global_effective_classes"] == pytest.approx(2.0)
  assert h["size_cv"] == 0.0
  # Each client mirrors the global mix: TV 0, exp(log 2) = 2 effective classes.
  h = partition.heterogeneity(partition.Partition.from_lists([[0, 2], [1, 3]]), labels, 2)
  assert h["label_tv_max"] == 0.0
  assert h["effective_classes_min"] == pytest.approx(2.0)


def test_in_summary_and_json():
  p = partition.dirichlet(LABELS, 8, 0.5, seed=0)
  s = json.loads(json.dumps(partition.summarize(p, LABELS, 4)))
  assert s["heterogeneity"] == pytest.approx(partition.heterogeneity(p, LABELS, 4))
  assert s["label_skew_tv"] == pytest.approx(s["heterogeneity"]["label_tv_mean"])


def test_heterogeneity_falls_as_alpha_rises():
  # 4 unbalanced classes, 8 clients: more concentration, less skew, more classes per client.
  hs = [
      partition.heterogeneity(partition.dirichlet(LABELS, 8, a, seed=0), LABELS, 4)
      for a in (0.05, 1.0, 1000.0)
  ]
  tv = [h["label_tv_mean"] for h in hs]
  eff = [h["effective_classes_mean"] for h in hs]
  assert tv[0] > tv[1] > tv[2]
  assert eff[0] < eff[1] < eff[2]
  assert eff[2] == pytest.approx(hs[2]["global_effective_classes"], rel=0.05)
