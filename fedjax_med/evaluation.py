"""Evaluation of a model on whole splits and for each client, in one place.

**Pooled splits.** ``evaluate`` runs a jitted eval step (``make_eval_fn``) over
fixed-size padded batches (``batching.make_eval_batches``: every batch has one
shape, so the step compiles once) and returns loss, accuracy and ROC-AUC.

**Per client.** A federated model that is accurate on the pooled test split can
still fail a hospital whose patients (label mix) or scanner (site shift)
differ. MedMNIST has no per-client test split, so client ``c``'s accuracy is
the test accuracy *as client c would measure it*:

- label skew: the test split reweighted to ``c``'s training label mix,
  ``acc_c = sum_y p_c(y) * acc(y)``, with ``acc(y)`` the accuracy on test
  examples of class ``y`` (a class absent from the test split counts 0);
- site feature skew (``partition.site_shift > 0``): ``acc(y)`` is measured on
  the test images rendered through ``c``'s acquisition profile
  (``data.site_shift.render``), the same transform its training images got;
- personalized algorithms (``FederatedAlgorithm.client_params``, e.g. FedBN's
  own BatchNorm layers): client ``c`` is evaluated with its own model.

``worst`` (the minimum over clients) is the fairness number the heterogeneity
study reports next to the pooled accuracy.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from fedjax_med import batching, data, metrics, tasks
from fedjax_med.data import site_shift
from fedjax_med.partition.base import Partition


def make_eval_fn(model):
  """Jitted ``(params, images, labels, mask) -> (EvalMetrics, probs [B, K])`` in eval mode."""
  predict = tasks.make_predict_fn(model)

  @jax.jit
  def eval_fn(params, images, labels, mask):
    logits = predict(params, images)
    return metrics.eval_batch_metrics(logits, labels, mask), jax.nn.softmax(logits)

  return eval_fn


def predict(eval_fn, params, images: np.ndarray, labels: np.ndarray, batch_size: int):
  """``(merged EvalMetrics, probs [N, K])`` of ``params`` over ``images`` in padded batches."""
  collected, probs = None, []
  for x, y, mask in batching.make_eval_batches(images, labels, batch_size):
    batch_metrics, batch_probs = eval_fn(params, *jax.device_put((x, y, mask)))
    collected = batch_metrics if collected is None else collected.merge(batch_metrics)
    probs.append(np.asarray(jax.device_get(batch_probs))[mask])
  return collected, np.concatenate(probs)


def predict_probs(eval_fn, params, images: np.ndarray, batch_size: int) -> np.ndarray:
  """Class probabilities [N, K] of ``params`` on ``images``."""
  return predict(eval_fn, params, images, np.zeros(len(images), np.int32), batch_size)[1]


def evaluate(eval_fn, params, split: data.Split, batch_size: int) -> dict:
  """Loss, accuracy and ROC-AUC of ``params`` on a whole split."""
  collected, probs = predict(eval_fn, params, split.images, split.labels, batch_size)
  result = {k: float(v) for k, v in collected.compute().items()}
  result["auc"] = metrics.auc(probs, split.labels)
  return result


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


class Evaluator:
  """Evaluation of one run's models: pooled val/test splits and every client.

  Built once per run (``experiment.build``); the eval step compiles once.
  """

  def __init__(self, model, dataset: data.Dataset, partition: Partition, *, batch_size: int,
               site_shift_strength: float = 0.0, seed: int = 0):
    self.eval_fn = make_eval_fn(model)
    self.dataset, self.partition = dataset, partition
    self.batch_size, self.site_shift_strength, self.seed = batch_size, site_shift_strength, seed

  def splits(self, params, names=("val", "test")) -> dict[str, dict]:
    """``{split: {"loss", "accuracy", "auc"}}`` of ``params`` on each named split."""
    return {s: evaluate(self.eval_fn, params, self.dataset.split(s), self.batch_size)
            for s in names}

  def clients(self, params, client_params: Callable[[int], object] | None = None) -> dict:
    """Per-client test accuracy summary (``summarize``) of the global model, or of each
    client's own model ``client_params(c)`` where the algorithm has one."""
    ds, bs = self.dataset, self.batch_size
    client_predict = None
    if client_params is not None:
      client_predict = lambda c, x: predict_probs(self.eval_fn, client_params(c), x, bs)  # noqa: E731
    summary = summarize(client_accuracies(
        lambda x: predict_probs(self.eval_fn, params, x, bs),
        ds.test.images, ds.test.labels, self.partition, ds.train.labels, ds.num_classes,
        site_shift_strength=self.site_shift_strength, seed=self.seed,
        client_predict=client_predict,
    ))
    summary["model"] = "each client's own" if client_params is not None else "global"
    return summary
