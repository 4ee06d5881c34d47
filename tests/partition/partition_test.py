"""Tests of fedjax_med.partition: coverage, determinism, skew, validation, summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedjax_med import errors, metrics, partition

NUM_CLASSES = 10
# 10 classes x 100 examples, interleaved so that label order != index order.
LABELS = np.tile(np.arange(NUM_CLASSES), 100)
N = len(LABELS)


def _make(kind: str, seed: int = 0, num_clients: int = 20, **kwargs) -> partition.Partition:
  return partition.make_partition(kind, LABELS, num_clients, seed, **kwargs)


ALL_KINDS = [
    ("iid", {}),
    ("dirichlet", {"alpha": 0.1}),
    ("dirichlet", {"alpha": 10.0, "min_size": 20}),
    ("shards", {"shards_per_client": 2}),
    ("shards", {"shards_per_client": 3}),
    ("quantity", {"quantity_sigma": 2.0}),
    ("quantity", {"quantity_kind": "power_law", "power_exponent": 0.8, "min_size": 5}),
]


@pytest.mark.parametrize("kind,kwargs", ALL_KINDS)
def test_every_example_in_exactly_one_client(kind, kwargs):
  p = _make(kind, **kwargs)
  assert p.indices.dtype == np.int64 and p.offsets.dtype == np.int64
  assert p.num_clients == 20
  np.testing.assert_array_equal(np.sort(p.indices), np.arange(N))
  joined = np.concatenate([p.client(i) for i in range(20)])
  np.testing.assert_array_equal(np.sort(joined), np.arange(N))
  assert p.sizes.sum() == N and len(p.sizes) == 20
  partition.check_partition(p, N)


@pytest.mark.parametrize("kind,kwargs", ALL_KINDS)
def test_deterministic_given_seed(kind, kwargs):
  a, b, c = _make(kind, 3, **kwargs), _make(kind, 3, **kwargs), _make(kind, 4, **kwargs)
  np.testing.assert_array_equal(a.indices, b.indices)
  np.testing.assert_array_equal(a.offsets, b.offsets)
  assert not (np.array_equal(a.indices, c.indices) and np.array_equal(a.offsets, c.offsets))


def test_iid_sizes_differ_by_at_most_one():
  p = partition.iid(103, 10, seed=0)
  assert sorted(p.sizes.tolist()) == [10] * 7 + [11] * 3


@pytest.mark.parametrize("method", ["per_client", "per_class"])
def test_dirichlet_alpha_controls_skew(method):
  # per_client draws Dir(alpha * p), total concentration alpha; per_class draws
  # Dir(alpha * 1) over 10 clients, total 10 alpha: its "near IID" alpha is 10x smaller.
  labels = np.repeat(np.arange(NUM_CLASSES), 500)
  low, high = (0.05, 1000.0) if method == "per_client" else (0.05, 100.0)
  skew = {}
  for alpha in (low, high):
    p = partition.dirichlet(labels, 10, alpha, seed=0, method=method)
    skew[alpha] = partition.summarize(p, labels, NUM_CLASSES)["label_skew_tv"]
  iid_skew = partition.summarize(partition.iid(len(labels), 10, 0), labels, NUM_CLASSES)
  assert skew[low] > 0.6
  assert skew[high] < 0.1
  assert abs(skew[high] - iid_skew["label_skew_tv"]) < 0.05


@pytest.mark.parametrize("alpha,min_size", [(0.3, 1), (0.3, 10), (2.0, 30)])
def test_dirichlet_respects_min_size(alpha, min_size):
  p = partition.dirichlet(LABELS, 20, alpha, seed=1, min_size=min_size)
  assert p.sizes.min() >= min_size


def test_dirichlet_impossible_min_size_raises():
  with pytest.raises(errors.ConfigError, match="raise alpha"):
    partition.dirichlet(LABELS, 50, 0.01, seed=0, min_size=15, max_tries=20, method="per_class")


@pytest.mark.parametrize("k", [1, 2, 3])
def test_shards_give_each_client_at_most_k_classes(k):
  # 10 classes x 60 examples, 20 clients: shards of 600 / (20 k) examples divide 60.
  labels = np.repeat(np.arange(NUM_CLASSES), 60)
  p = partition.shards(labels, 20, k, seed=0)
  hist = np.array(partition.summarize(p, labels, NUM_CLASSES)["label_histogram"])
  assert ((hist > 0).sum(1) <= k).all()
  assert (p.sizes == 600 // 20).all()


@pytest.mark.parametrize("kind", ["lognormal", "power_law"])
def test_quantity_sizes_sum_and_min_size(kind):
  p = partition.quantity(10_000, 100, seed=0, kind=kind, sigma=2.0, exponent=0.7, min_size=7)
  assert p.sizes.sum() == 10_000
  assert p.sizes.min() >= 7


def test_quantity_spread_grows_with_sigma():
  def cv(sigma):
    sizes = partition.quantity(10_000, 100, seed=0, sigma=sigma).sizes
    return sizes.std() / sizes.mean()

  assert cv(0.0) < 0.02  # sigma = 0: equal sizes (up to rounding)
  assert cv(0.1) < cv(1.0) < cv(2.0)


def test_quantity_heavy_power_law_does_not_overflow():
  p = partition.quantity(1000, 50, seed=0, kind="power_law", exponent=1e-3)
  assert p.sizes.sum() == 1000 and p.sizes.min() >= 1


def test_from_lists_and_client_of_example():
  p = partition.Partition.from_lists([[3, 0], [], [1, 2, 4]])
  assert p.num_clients == 3
  np.testing.assert_array_equal(p.sizes, [2, 0, 3])
  np.testing.assert_array_equal(p.client(0), [3, 0])
  np.testing.assert_array_equal(p.client(-1), [1, 2, 4])
  np.testing.assert_array_equal(p.client_of_example(), [0, 2, 2, 0, 2])
  partition.check_partition(p, 5)
  with pytest.raises(errors.ConfigError):
    partition.check_partition(partition.Partition.from_lists([[0, 1], [1]]), 3)
  with pytest.raises(errors.ConfigError):
    partition.check_partition(partition.Partition.from_lists([[0, 1], [5]]), 3)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: _make("iid", num_clients=0), "num_clients must be >= 1"),
        (lambda: _make("dirichlet", num_clients=-3), "num_clients must be >= 1"),
        (lambda: _make("iid", num_clients=N + 1), "exceeds the 1000 training examples"),
        (lambda: _make("shards", num_clients=N + 1), "exceeds the 1000 training examples"),
        (lambda: _make("iid", num_clients=2.5), "must be an integer"),
        (lambda: _make("dirichlet", min_size=51), "lower min_size or num_clients"),
        (lambda: _make("quantity", min_size=51), "lower min_size or num_clients"),
        (lambda: _make("dirichlet", alpha=0.0), "alpha must be > 0"),
        (lambda: _make("dirichlet", alpha=-1.0), "alpha must be > 0"),
        (lambda: _make("dirichlet", alpha=float("nan")), "alpha must be finite"),
        (lambda: _make("dirichlet", alpha=float("inf")), "alpha must be finite"),
        (lambda: _make("shards", shards_per_client=0), "shards_per_client must be >= 1"),
        (lambda: _make("shards", num_clients=400, shards_per_client=3), "lower shards_per_client"),
        (lambda: _make("quantity", quantity_sigma=-0.5), "sigma must be >= 0"),
        (
            lambda: _make("quantity", quantity_kind="power_law", power_exponent=0.0),
            "exponent must be > 0",
        ),
        (lambda: _make("quantity", quantity_kind="zipf"), "valid kinds: lognormal, power_law"),
        (lambda: _make("iid", seed=-1), "seed must be >= 0"),
        (lambda: _make("pathological"), "valid kinds: iid, dirichlet, shards, quantity"),
        (
            lambda: partition.make_partition("dirichlet", np.full((N, 3), 2), 5, 0),
            "multi-label labels must be 0 or 1",
        ),
        (
            lambda: partition.make_partition("shards", np.zeros((N, 3, 2), np.int64), 5, 0),
            r"need \[N\] or \[N, 1\] class ids or \[N, L\] multi-hot labels",
        ),
        (lambda: partition.dirichlet(LABELS - 1, 5, 1.0, 0), "labels must be >= 0"),
        (lambda: partition.shards(LABELS.astype(float), 5, 2, 0), "labels must be integers"),
        (lambda: partition.iid(0, 1, 0), "num_examples must be >= 1"),
    ],
)
def test_invalid_arguments_raise_config_error(call, match):
  with pytest.raises(errors.ConfigError, match=match):
    call()


def test_config_error_is_a_value_error():
  with pytest.raises(ValueError):
    _make("iid", num_clients=0)


def test_labels_in_medmnist_layout_are_accepted():
  a = partition.dirichlet(LABELS[:, None].astype(np.uint8), 10, 0.5, seed=0)
  b = partition.dirichlet(LABELS, 10, 0.5, seed=0)
  np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("kind,kwargs", ALL_KINDS)
def test_summary_is_json_and_consistent(kind, kwargs):
  p = _make(kind, **kwargs)
  s = partition.summarize(p, LABELS, NUM_CLASSES)
  s = json.loads(json.dumps(s))
  assert s["num_clients"] == 20 and s["num_examples"] == N
  assert s["sizes"] == p.sizes.tolist()
  np.testing.assert_array_equal(np.sum(s["label_histogram"], axis=1), s["sizes"])
  assert s["global_label_histogram"] == [100] * NUM_CLASSES
  assert s["size_stats"]["min"] <= s["size_stats"]["median"] <= s["size_stats"]["max"]
  assert s["size_stats"]["mean"] == pytest.approx(N / 20)
  assert 0.0 <= s["label_skew_tv"] <= 1.0


def test_summary_skew_extremes():
  # Client 0 holds all of class 0, client 1 all of class 1: TV = 0.5 each.
  labels = np.array([0, 0, 1, 1])
  s = partition.summarize(partition.Partition.from_lists([[0, 1], [2, 3]]), labels, 2)
  assert s["label_skew_tv"] == pytest.approx(0.5)
  assert s["classes_per_client"]["max"] == 1
  s = partition.summarize(partition.Partition.from_lists([[0, 2], [1, 3]]), labels, 2)
  assert s["label_skew_tv"] == pytest.approx(0.0)


def test_summary_multi_label():
  # Positives per label: 2, 2, 1 (ties to the lower index): rarest first 2, 0, 1.
  labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
  np.testing.assert_array_equal(partition.label_summary(labels), [3, 2, 1, 0])
  s = partition.summarize(partition.Partition.from_lists([[0], [1, 2, 3]]), labels, 3)
  assert s["finding_histogram"] == [[1, 0, 1], [1, 2, 0]]
  # The skew is measured on the summary: no finding, then each rarest finding.
  assert s["label_histogram"] == [[0, 0, 0, 1], [1, 1, 1, 0]]
  assert s["label_histogram"] == partition.label_histogram(
      partition.Partition.from_lists([[0], [1, 2, 3]]), partition.label_summary(labels), 4
  ).tolist()
  assert s["label_summary"].startswith("0 = no finding")
  # Global mix 1/4 each; TV 0.5 * (3 * 1/4 + 3/4) = 0.75 and 0.5 * (3 * 1/12 + 1/4) = 0.25.
  assert s["label_skew_tv"] == pytest.approx((0.75 + 0.25) / 2)
  json.dumps(s)


def reference_summary(labels):
  """0 without a finding, else 1 + the finding with the fewest positives (lowest index on ties)."""
  counts = [sum(int(row[k]) for row in labels) for k in range(labels.shape[1])]
  out = []
  for row in labels:
    findings = [k for k in range(len(row)) if row[k]]
    out.append(0 if not findings else 1 + min(findings, key=lambda k: (counts[k], k)))
  return out


@pytest.mark.parametrize("seed", range(3))
def test_label_summary_matches_a_loop(seed):
  rng = np.random.default_rng(seed)
  labels = (rng.random((200, 6)) < [0.3, 0.05, 0.3, 0.1, 0.0, 0.5]).astype(np.uint8)
  got = partition.label_summary(labels)
  assert got.dtype == np.int64
  np.testing.assert_array_equal(got, reference_summary(labels))


def test_dirichlet_on_chestmnist_skews_the_summary():
  from fedjax_med.data import synthetic

  labels = synthetic.make_dataset("chestmnist", n_train=600, n_val=0, n_test=0,
                                  class_probs=np.linspace(0.02, 0.3, 14)).train.labels
  summary = partition.label_summary(labels)
  tv = {}
  for alpha in (0.1, 1000.0):
    p = partition.make_partition("dirichlet", labels, 6, seed=0, alpha=alpha)
    np.testing.assert_array_equal(np.sort(p.indices), np.arange(len(labels)))
    # The partition deals the summary classes: the same as partitioning the summary itself.
    np.testing.assert_array_equal(
        p.indices, partition.make_partition("dirichlet", summary, 6, seed=0, alpha=alpha).indices)
    h = partition.heterogeneity(p, labels, 14)
    assert h == partition.heterogeneity(p, summary, 15)  # measured on the summary
    tv[alpha] = h["label_tv_mean"]
  assert tv[0.1] > 0.3 and tv[1000.0] < 0.1
  shards = partition.make_partition("shards", labels, 6, seed=0, shards_per_client=1)
  assert partition.summarize(shards, labels, 14)["classes_per_client"]["max"] <= 4


def test_summary_written_as_atomic_json(tmp_path):
  s = partition.summarize(_make("dirichlet", alpha=0.5), LABELS, NUM_CLASSES)
  path = tmp_path / "sub" / "partition.json"
  metrics.write_json_atomic(path, s)
  metrics.write_json_atomic(path, s)  # overwriting is fine
  assert json.loads(path.read_text()) == json.loads(json.dumps(s))
  assert [f.name for f in path.parent.iterdir()] == ["partition.json"]  # no temp files left


@pytest.mark.parametrize("alpha", [0.05, 0.1, 1.0])
def test_dirichlet_per_client_binary_many_clients(alpha):
  # Hsu et al.'s scheme works where per-class draws cannot (2 classes, 20 clients, small alpha).
  labels = (np.random.default_rng(0).random(4708) < 0.74).astype(np.int64)
  p = partition.dirichlet(labels, 20, alpha, seed=0, min_size=10)
  np.testing.assert_array_equal(np.sort(p.indices), np.arange(len(labels)))
  assert p.sizes.min() >= 235 and p.sizes.max() <= 236
  if alpha <= 0.1:
    with pytest.raises(errors.ConfigError):
      partition.dirichlet(labels, 20, alpha, seed=0, min_size=10, method="per_class", max_tries=50)


def test_dirichlet_unknown_method():
  with pytest.raises(errors.ConfigError, match="per_client"):
    partition.dirichlet(LABELS, 5, 1.0, seed=0, method="hsu")
