"""Per-client test accuracy (fedjax_med/evaluation.py) against a slow, obvious reference."""

import numpy as np
import pytest

from fedjax_med import evaluation
from fedjax_med.data import site_shift
from fedjax_med.partition.base import Partition

CENTERS = np.array([0.3, 0.5, 0.7])  # class k is predicted when the mean intensity is near CENTERS[k]


def predict_probs(images: np.ndarray) -> np.ndarray:
  """A fixed model of the mean pixel intensity: the nearest of CENTERS wins ([N, 3])."""
  m = images.astype(np.float64).mean(axis=(1, 2, 3)) / 255.0
  scores = -((m[:, None] - CENTERS[None]) ** 2) * 50.0
  e = np.exp(scores - scores.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


def make_images(rng, labels: np.ndarray) -> np.ndarray:
  """[N, 28, 28, 1] uint8 whose mean intensity mostly follows the label (so accuracy is 0 < a < 1)."""
  brightness = CENTERS[labels] + rng.normal(0.0, 0.1, len(labels))
  x = brightness[:, None, None, None] * 255 + rng.normal(0.0, 20.0, (len(labels), 28, 28, 1))
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_problem(seed=0, num_clients=4, n_train=90, n_test=60, test_classes=(0, 1, 2)):
  rng = np.random.default_rng(seed)
  train_labels = rng.integers(0, 3, n_train)
  test_labels = rng.choice(np.array(test_classes), n_test)
  test_images = make_images(rng, test_labels)
  perm = rng.permutation(n_train)
  cuts = np.sort(rng.choice(np.arange(1, n_train), num_clients - 1, replace=False))
  # skew: client c gets a label-sorted chunk, so label mixes differ
  order = perm[np.argsort(train_labels[perm], kind="stable")]
  partition = Partition.from_lists(np.split(order, cuts))
  return test_images, test_labels, partition, train_labels


def reference(predict, test_images, test_labels, partition, train_labels, num_classes,
              strength=0.0, seed=0, client_predict=None):
  """Loops: for each client, each test example weighted by p_c(y) / count_test(y)."""
  prof = site_shift.profiles(partition.num_clients, strength, seed) if strength > 0 else None
  out = []
  for c in range(partition.num_clients):
    own = [int(train_labels[i]) for i in partition.client(c)]
    p = [own.count(k) / len(own) for k in range(num_classes)]
    images = test_images if prof is None else site_shift.render(test_images, c, prof, seed)
    probs = client_predict(c, images) if client_predict else predict(images)
    count = [int(np.sum(test_labels == k)) for k in range(num_classes)]
    acc = 0.0
    for i in range(len(test_labels)):
      y = int(test_labels[i])
      correct = float(int(np.argmax(probs[i])) == y)
      acc += p[y] / count[y] * correct
    out.append(acc)
  return np.array(out)


@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_client_accuracies_match_reference(strength):
  test_images, test_labels, partition, train_labels = make_problem()
  got = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                      train_labels, 3, site_shift_strength=strength, seed=3)
  want = reference(predict_probs, test_images, test_labels, partition, train_labels, 3,
                   strength=strength, seed=3)
  assert got.shape == (partition.num_clients,)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  assert np.all((got >= 0) & (got <= 1))
  assert len(set(np.round(got, 6))) > 1  # the clients' label mixes differ


def client_predict(c: int, images: np.ndarray) -> np.ndarray:
  """A personalized model per client: client c's intensity scale differs."""
  return predict_probs(np.clip(images.astype(np.float64) * (0.8 + 0.15 * c), 0, 255))


@pytest.mark.parametrize("strength", [0.0, 1.0])
def test_client_predict_matches_reference(strength):
  test_images, test_labels, partition, train_labels = make_problem()
  got = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                      train_labels, 3, site_shift_strength=strength, seed=3,
                                      client_predict=client_predict)
  want = reference(predict_probs, test_images, test_labels, partition, train_labels, 3,
                   strength=strength, seed=3, client_predict=client_predict)
  np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
  shared = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                         train_labels, 3, site_shift_strength=strength, seed=3)
  assert not np.allclose(got, shared)  # the per-client models were used


def test_site_shift_changes_client_accuracies():
  test_images, test_labels, partition, train_labels = make_problem()
  plain = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                        train_labels, 3)
  shifted = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                          train_labels, 3, site_shift_strength=1.0, seed=3)
  assert not np.allclose(plain, shifted)
  # and each client sees its own scanner: a different seed gives different numbers
  other = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                        train_labels, 3, site_shift_strength=1.0, seed=4)
  assert not np.allclose(shifted, other)


def test_client_accuracies_with_a_class_absent_from_the_test_split():
  test_images, test_labels, partition, train_labels = make_problem(seed=1, test_classes=(0, 2))
  for strength in (0.0, 1.0):
    got = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                        train_labels, 3, site_shift_strength=strength)
    want = reference(predict_probs, test_images, test_labels, partition, train_labels, 3,
                     strength=strength)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_without_skew_every_client_gets_the_pooled_accuracy_of_its_mix():
  """One client owning all of a balanced train split, balanced test: the balanced accuracy."""
  rng = np.random.default_rng(5)
  test_labels = np.repeat(np.arange(3), 20)
  test_images = make_images(rng, test_labels)
  train_labels = np.repeat(np.arange(3), 10)
  partition = Partition.from_lists([np.arange(30)])
  got = evaluation.client_accuracies(predict_probs, test_images, test_labels, partition,
                                      train_labels, 3)
  pred = np.argmax(predict_probs(test_images), axis=1)
  np.testing.assert_allclose(got, [np.mean(pred == test_labels)])


def test_class_accuracy_with_an_absent_class():
  probs = np.array([[0.9, 0.1, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0], [0.6, 0.4, 0.0, 0.0],
                    [0.1, 0.2, 0.0, 0.7], [0.1, 0.2, 0.0, 0.7]])
  labels = np.array([0, 1, 1, 3, 0])
  acc = evaluation.class_accuracy(probs, labels, 4)
  np.testing.assert_allclose(acc, [0.5, 0.5, 0.0, 1.0])  # class 2 has no examples: 0


def test_label_mix_rows_sum_to_one():
  _, _, partition, train_labels = make_problem(num_clients=5)
  mix = evaluation.label_mix(partition, train_labels, 3)
  assert mix.shape == (5, 3)
  np.testing.assert_allclose(mix.sum(axis=1), 1.0)
  for c in range(5):
    own = train_labels[partition.client(c)]
    np.testing.assert_allclose(mix[c], [np.mean(own == k) for k in range(3)])


def test_summarize():
  acc = np.array([0.9, 0.5, 0.7, 0.8, 0.6, 0.95, 0.85, 0.75, 0.65, 0.55, 0.99])
  s = evaluation.summarize(acc)
  assert s["worst"] == pytest.approx(0.5) and s["best"] == pytest.approx(0.99)
  assert s["mean"] == pytest.approx(acc.mean())
  assert s["p10"] == pytest.approx(np.percentile(acc, 10))
  assert s["worst"] <= s["p10"] <= s["mean"]
  assert len(s["accuracy"]) == len(acc) and s["accuracy"][1] == 0.5
  assert all(isinstance(v, float) for v in (s["worst"], s["p10"], s["mean"], s["best"]))
