"""Per-client test accuracy of a global model: how well it serves each institution.

A federated model that is accurate on the pooled test split can still fail a
hospital whose patients (label mix) or scanner (site shift) differ. There is
no per-client test split in MedMNIST, so client ``c``'s accuracy is the test
accuracy *as client c would measure it*:

- label skew: the test split reweighted to ``c``'s training label mix,
  ``acc_c = sum_y p_c(y) * acc(y)``, with ``acc(y)`` the accuracy on test
  examples of class ``y`` (a class absent from the test split counts 0);
- site feature skew (``partition.site_shift > 0``): ``acc(y)`` is measured on
  the test images rendered through ``c``'s acquisition profile
  (``data.site_shift.render``), the same transform its training images got.

``worst`` (the minimum over clients) is the fairness number the heterogeneity
study reports next to the pooled accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedjax_med.data import site_shift
from fedjax_med.partition.base import Partition


def class_accuracy(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Accuracy on the examples of each class ([num_classes]; 0 where a class has none)."""
  correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
  hits = np.bincount(labels, weights=correct, minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  return np.where(counts > 0, hits / np.maximum(counts, 1), 0.0)


def label_mix(partition: Partition, train_labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[num_clients, num_classes] training label distribution of each client (rows sum to 1)."""
  mix = np.zeros((partition.num_clients, num_classes))
  for c in range(partition.num_clients):
    counts = np.bincount(train_labels[partition.client(c)], minlength=num_classes)
    mix[c] = counts / max(counts.sum(), 1)
  return mix


def client_accuracies(
    predict_probs: Callable[[np.ndarray], np.ndarray],
    test_images: np.ndarray,
    test_labels: np.ndarray,
    partition: Partition,
    train_labels: np.ndarray,
    num_classes: int,
    *,
    site_shift_strength: float = 0.0,
    seed: int = 0,
    client_predict: Callable[[int, np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
  """Accuracy of the model behind ``predict_probs`` (images -> [N, classes]) for each client.

  ``client_predict(c, images)``, if given, replaces ``predict_probs`` with each
  client's own (personalized) model, e.g. FedBN's local BatchNorm layers.
  """
  mix = label_mix(partition, train_labels, num_classes)
  if site_shift_strength <= 0 and client_predict is None:
    per_class = class_accuracy(predict_probs(test_images), test_labels, num_classes)
    return mix @ per_class
  prof = (site_shift.profiles(partition.num_clients, site_shift_strength, seed)
          if site_shift_strength > 0 else None)
  out = np.zeros(partition.num_clients)
  for c in range(partition.num_clients):
    images = test_images if prof is None else site_shift.render(test_images, c, prof, seed)
    probs = client_predict(c, images) if client_predict else predict_probs(images)
    out[c] = mix[c] @ class_accuracy(probs, test_labels, num_classes)
  return out


def summarize(accuracies: np.ndarray) -> dict:
  """JSON-ready summary: worst, 10th percentile, mean, best and the list itself."""
  a = np.asarray(accuracies, np.float64)
  return {
      "worst": float(a.min()),
      "p10": float(np.percentile(a, 10)),
      "mean": float(a.mean()),
      "best": float(a.max()),
      "accuracy": [round(float(x), 5) for x in a],
  }
