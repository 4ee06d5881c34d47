"""Tests for fedjax_med.data.synthetic: official layout, determinism, learnability."""

from __future__ import annotations

import numpy as np
import pytest

from fedjax_med import errors
from fedjax_med.data import medmnist, registry, synthetic


@pytest.mark.parametrize(
  "name,size", [("pneumoniamnist", 28), ("pathmnist", 64), ("bloodmnist", 28), ("octmnist", 224)]
)
def test_official_layout(name, size):
  info = registry.get_info(name)
  arrays = synthetic.make_arrays(name, size, n_train=5, n_val=3, n_test=2)
  assert sorted(arrays) == sorted(medmnist.KEYS)
  for split, n in (("train", 5), ("val", 3), ("test", 2)):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    gray_or_rgb = (n, size, size) if info.channels == 1 else (n, size, size, 3)
    assert images.shape == gray_or_rgb and images.dtype == np.uint8
    assert labels.shape == (n, 1) and labels.dtype == np.uint8
    assert labels.max() < info.num_classes


def test_deterministic_and_seeded():
  a = synthetic.make_arrays("dermamnist", seed=3)
  b = synthetic.make_arrays("dermamnist", seed=3)
  c = synthetic.make_arrays("dermamnist", seed=4)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["train_images"], c["train_images"])


def test_make_dataset_equals_loaded_file(tmp_path):
  kwargs = dict(name="retinamnist", size=64, n_train=7, n_val=2, n_test=3, seed=1)
  ds = synthetic.make_dataset(**kwargs)
  synthetic.write_npz(tmp_path / "retinamnist_64.npz", **kwargs)
  loaded = medmnist.load(
    "retinamnist", root=str(tmp_path), size=64, download=False, verify_md5=False
  )
  for split in medmnist.SPLITS:
    np.testing.assert_array_equal(ds.split(split).images, loaded.split(split).images)
    np.testing.assert_array_equal(ds.split(split).labels, loaded.split(split).labels)


def test_write_npz_appends_suffix(tmp_path):
  path = synthetic.write_npz(tmp_path / "sub" / "x", n_train=1, n_val=1, n_test=1)
  assert path.endswith("x.npz")
  with np.load(path) as npz:
    assert sorted(npz.files) == sorted(medmnist.KEYS)


def test_class_probs():
  arrays = synthetic.make_arrays("bloodmnist", n_train=4000, class_probs=[8, 1, 1, 0, 0, 0, 0, 0])
  freq = np.bincount(arrays["train_labels"][:, 0], minlength=8) / 4000
  np.testing.assert_allclose(freq, [0.8, 0.1, 0.1, 0, 0, 0, 0, 0], atol=0.03)


@pytest.mark.parametrize("probs", [[1.0], [1.0, -1.0], [0.0, 0.0]])
def test_bad_class_probs(probs):
  with pytest.raises(errors.ConfigError, match="class_probs"):
    synthetic.make_arrays("pneumoniamnist", class_probs=probs)


def test_rejects_what_load_rejects():
  with pytest.raises(errors.DataError, match="Valid sizes"):
    synthetic.make_arrays(size=30)
  with pytest.raises(errors.DataError, match="Valid sizes: 28, 64 "):
    synthetic.make_arrays("synapsemnist3d", size=128)


def test_multi_label_prevalence():
  arrays = synthetic.make_arrays("chestmnist", n_train=4000, n_val=0, n_test=0,
                                 class_probs=[0.5] + [0.1] * 13)
  np.testing.assert_allclose(arrays["train_labels"].mean(0), [0.5] + [0.1] * 13, atol=0.03)
  with pytest.raises(errors.ConfigError, match="prevalences in"):
    synthetic.make_arrays("chestmnist", class_probs=[2.0] * 14)


def test_3d_patterns_differ_by_class():
  patterns = synthetic.class_patterns(3, 8, 1, dims=3)
  assert patterns.shape == (3, 8, 8, 8, 1)
  flat = patterns.reshape(3, -1)
  assert np.all(np.abs(flat[:, None] - flat[None]).sum(-1)[~np.eye(3, dtype=bool)] > 1.0)


def _softmax_regression_accuracy(ds: medmnist.Dataset, steps: int = 30, lr: float = 0.5) -> float:
  """Full-batch gradient descent on a linear softmax model; test accuracy."""
  x = ds.train.images.reshape(len(ds.train.labels), -1) / 255.0
  xt = ds.test.images.reshape(len(ds.test.labels), -1) / 255.0
  mean = x.mean(0)
  x, xt = x - mean, xt - mean
  y = ds.train.labels
  w = np.zeros((x.shape[1], ds.num_classes))
  b = np.zeros(ds.num_classes)
  for _ in range(steps):
    z = x @ w + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1  # Softmax cross-entropy gradient w.r.t. logits.
    w -= lr * x.T @ p / len(y)
    b -= lr * p.mean(0)
  return float(np.mean(np.argmax(xt @ w + b, 1) == ds.test.labels))


@pytest.mark.parametrize(
  "name,size", [("pneumoniamnist", 28), ("bloodmnist", 28), ("organamnist", 28), ("pathmnist", 64)]
)
def test_learnable_by_linear_model(name, size):
  ds = synthetic.make_dataset(name, size, n_train=400, n_val=0, n_test=200)
  # Chance is 1 / num_classes (at most 0.5 here); a linear model should be near-perfect.
  acc = _softmax_regression_accuracy(ds)
  assert acc >= 0.9, acc


def test_harder_with_more_noise():
  easy = synthetic.make_dataset("organamnist", n_train=400, n_test=200, noise=0.2)
  hard = synthetic.make_dataset("organamnist", n_train=400, n_test=200, noise=1.0)
  acc_hard = _softmax_regression_accuracy(hard)
  assert _softmax_regression_accuracy(easy) > acc_hard > 1.0 / 11
