"""Evaluation of a model on whole splits and on each site's own held-out data, in one place.

**Pooled splits.** ``evaluate`` runs a jitted eval step (``make_eval_fn``) over
fixed-size padded batches (``batching.make_eval_batches``: every batch has one
shape, so the step compiles once) and returns loss, accuracy, balanced
accuracy, per-class recall and ROC-AUC (binary: the positive class's score;
multi-class: the mean one-vs-rest AUC, as MedMNIST reports it).

**Multi-label** (ChestMNIST, labels ``[N, L]`` in {0, 1}): the probabilities are
the sigmoid of each label's logit and every metric is a mean over the L labels,
each label a binary task at threshold 0.5: ``loss`` the sigmoid binary
cross-entropy; ``accuracy`` MedMNIST's ACC (per-label accuracy);
``balanced_accuracy`` the per-label ``(TPR + TNR) / 2`` (sklearn's
``balanced_accuracy_score`` of the label: over the values present, so a label
without positives counts its TNR alone); ``recall[l]`` label ``l``'s
sensitivity (TPR; ``None`` without positives); ``auc`` MedMNIST's mean
per-label AUC, over the labels where it is defined (both values present;
``auc_undefined_labels`` counts the others).

**Per site.** A federated model that is accurate on the pooled test split can
still fail a hospital whose patients (label mix) or scanner (site shift)
differ. Every client keeps a seeded held-out share of its own partition
(``partition.holdout``, ``--config.eval.site_holdout``), and ``site_metrics``
evaluates on it: the global model, or each client's own model where the
algorithm has one (``FederatedAlgorithm.client_params``: FedBN's own
BatchNorm, FedPer's head, Ditto's and APFL's personal models, the ``local``
baseline), or either fine-tuned by the site (``finetune``). Under site feature
skew the held-out images went through the client's own scanner like the rest of
its data. The summary gives mean, worst and spread (standard deviation) over
the sites that trained of accuracy, balanced accuracy and AUC (AUC is
undefined, ``None``, on a share with one class; such sites are left out of the
AUC mean and worst, and counted); sites never sampled are summarized apart.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from fedjax_med import batching, data, metrics, tasks
from fedjax_med.partition import base as partition_base
from fedjax_med.partition.base import Partition


def make_eval_fn(model, multi_label: bool = False):
  """Jitted ``(params, images, labels, mask) -> (EvalMetrics, probs [B, K])`` in eval mode.

  ``probs`` is the softmax of the logits, or (``multi_label``) each label's sigmoid.
  """
  predict = tasks.make_predict_fn(model)

  @jax.jit
  def eval_fn(params, images, labels, mask):
    logits = predict(params, images)
    probs = jax.nn.sigmoid(logits) if multi_label else jax.nn.softmax(logits)
    return metrics.eval_batch_metrics(logits, labels, mask, multi_label), probs

  return eval_fn


def predict(eval_fn, params, images: np.ndarray, labels: np.ndarray, batch_size: int):
  """``(merged EvalMetrics, probs [N, K])`` of ``params`` over ``images`` in padded batches."""
  collected, probs = None, []
  for x, y, mask in batching.make_eval_batches(images, labels, batch_size):
    batch_metrics, batch_probs = eval_fn(params, *jax.device_put((x, y, mask)))
    collected = batch_metrics if collected is None else collected.merge(batch_metrics)
    probs.append(np.asarray(jax.device_get(batch_probs))[mask])
  return collected, np.concatenate(probs)


def predict_probs(eval_fn, params, images: np.ndarray, batch_size: int,
                  label_shape: tuple[int, ...] = ()) -> np.ndarray:
  """Class probabilities [N, K] of ``params`` on ``images``.

  ``label_shape``: the shape of one example's label, ``()`` or (multi-label) ``(L,)``:
  the placeholder labels ``eval_fn`` is called with.
  """
  placeholder = np.zeros((len(images), *label_shape), np.int32)
  return predict(eval_fn, params, images, placeholder, batch_size)[1]


def multi_label_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
  """``class_metrics`` of a multi-label task: means over the labels at threshold 0.5.

  Label ``l`` is predicted positive when ``probs[:, l] > 0.5``. ``accuracy`` is
  the mean per-label accuracy (MedMNIST's ACC); ``balanced_accuracy`` the mean
  over labels of the mean of TPR and TNR, over the values present in that
  label (a label without positives counts its TNR); ``recall[l]`` the TPR of
  label ``l`` (``None`` without positives); ``auc`` the mean per-label AUC over
  the labels that have one, ``auc_undefined_labels`` how many do not.
  """
  labels = np.asarray(labels) > 0
  if probs.shape != labels.shape:
    raise ValueError(f"multi-label probs {probs.shape} and labels {labels.shape} differ")
  n = len(labels)
  pred = probs > 0.5
  pos = labels.sum(0)  # [L]
  neg = n - pos
  tpr = np.where(pos > 0, (pred & labels).sum(0) / np.maximum(pos, 1), np.nan)
  tnr = np.where(neg > 0, (~pred & ~labels).sum(0) / np.maximum(neg, 1), np.nan)
  both = np.stack([tpr, tnr])  # [2, L]
  present = ~np.isnan(both)
  per_label_balanced = np.nansum(both, 0) / np.maximum(present.sum(0), 1)
  per_label_auc = metrics.per_label_auc(probs, labels)
  defined = ~np.isnan(per_label_auc)
  return {
      "accuracy": float((pred == labels).mean()) if n else float("nan"),
      "balanced_accuracy": float(per_label_balanced.mean()) if n else float("nan"),
      "recall": [None if np.isnan(r) else float(r) for r in tpr],
      "auc": float(per_label_auc[defined].mean()) if defined.any() else None,
      "auc_undefined_labels": int((~defined).sum()),
  }


def class_metrics(probs: np.ndarray, labels: np.ndarray) -> dict:
  """Accuracy, balanced accuracy, per-class recall and AUC from probabilities [N, K].

  ``recall[k]`` is ``None`` for a class absent from ``labels``; balanced
  accuracy is the mean recall over the classes present. ``[N, L]`` multi-hot
  labels are a multi-label task: :func:`multi_label_metrics`.
  """
  if partition_base.is_multi_label(labels):
    return multi_label_metrics(probs, labels)
  labels = np.asarray(labels).reshape(-1)
  num_classes = probs.shape[1]
  correct = (np.argmax(probs, axis=-1) == labels).astype(np.float64)
  hits = np.bincount(labels, weights=correct, minlength=num_classes)
  counts = np.bincount(labels, minlength=num_classes)
  recall = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
  auc = metrics.auc(probs, labels)
  return {
      "accuracy": float(correct.mean()) if len(labels) else float("nan"),
      "balanced_accuracy": float(np.nanmean(recall)) if (counts > 0).any() else float("nan"),
      "recall": [None if np.isnan(r) else float(r) for r in recall],
      "auc": None if np.isnan(auc) else auc,
  }


def evaluate(eval_fn, params, split: data.Split, batch_size: int) -> dict:
  """Loss, accuracy, balanced accuracy, per-class recall and ROC-AUC of ``params`` on a split."""
  collected, probs = predict(eval_fn, params, split.images, split.labels, batch_size)
  result = {k: float(v) for k, v in collected.compute().items()}
  # The pooled accuracy stays clu's (as before); the rest comes from the probabilities.
  extra = class_metrics(probs, split.labels)
  result.update(balanced_accuracy=extra["balanced_accuracy"], recall=extra["recall"],
                auc=metrics.auc(probs, split.labels))
  if "auc_undefined_labels" in extra:  # multi-label only: single-label records are unchanged
    result["auc_undefined_labels"] = extra["auc_undefined_labels"]
  return result


SITE_METRICS = ("accuracy", "balanced_accuracy", "auc")


def summarize_sites(per_site: list[dict], include: np.ndarray | None = None) -> dict:
  """Mean, worst (minimum) and spread (population std) over sites of each of ``SITE_METRICS``.

  Only the sites where ``include`` [num_sites] is True count (``None``: all);
  ``per_site`` lists every site's value. Sites where a metric is undefined
  (``None``: AUC on a one-class share, any metric on an empty share) are left
  out of that metric and counted.
  """
  include = np.ones(len(per_site), bool) if include is None else np.asarray(include, bool)
  counted = [s for s, keep in zip(per_site, include, strict=True) if keep]
  out = {}
  for name in SITE_METRICS:
    values = np.asarray([s[name] for s in counted if s[name] is not None], np.float64)
    values = values[~np.isnan(values)]
    out[name] = {
        "mean": float(values.mean()) if len(values) else None,
        "worst": float(values.min()) if len(values) else None,
        "spread": float(values.std()) if len(values) else None,
        "undefined_sites": len(counted) - len(values),
        "per_site": [None if s[name] is None else round(float(s[name]), 5) for s in per_site],
    }
  return out


def site_metrics(
    predict_fn: Callable[[int, np.ndarray], np.ndarray],
    images: np.ndarray,
    labels: np.ndarray,
    sites: Partition,
) -> list[dict]:
  """``class_metrics`` of each site on its own held-out examples.

  Args:
    predict_fn: ``(site, images) -> probs [n, K]``: the global model for every
      site, or each site's own model.
    images, labels: the (site-shifted) training split the shares index into.
    sites: each site's held-out example indices.
  """
  out = []
  for c in range(sites.num_clients):
    idx = sites.client(c)
    if len(idx) == 0:
      out.append({"n": 0, **{m: None for m in SITE_METRICS}, "recall": []})
      continue
    res = class_metrics(predict_fn(c, images[idx]), labels[idx])
    out.append({"n": int(len(idx)), **res})
  return out


class Evaluator:
  """Evaluation of one run's models: pooled val/test splits and every site's held-out share.

  Built once per run (``experiment.build``); the eval step compiles once.
  """

  def __init__(self, model, dataset: data.Dataset, sites: Partition, *, batch_size: int):
    self.eval_fn = make_eval_fn(model, multi_label=dataset.multi_label)
    self.dataset, self.site_test, self.batch_size = dataset, sites, batch_size

  def splits(self, params, names=("val", "test")) -> dict[str, dict]:
    """``{split: evaluate(...)}`` of ``params`` on each named split."""
    return {s: evaluate(self.eval_fn, params, self.dataset.split(s), self.batch_size)
            for s in names}

  def sites(self, model_for: Callable[[int], object], participated: np.ndarray | None = None,
            *, model: str = "global") -> dict | None:
    """Per-site metrics on the held-out shares, ``None`` when no site holds anything out.

    Args:
      model_for: ``site -> params``, the model site ``site`` is tested with (the
        global model, its own, or one fine-tuned from either).
      participated: [num_sites] bool, the sites that trained (``None``: all). The
        summary (mean, worst, spread) is over them; the others, never sampled, are
        summarized apart under ``never_sampled`` (``None`` when there are none).
      model: what ``model_for`` gives, recorded as ``model``.
    """
    if int(self.site_test.sizes.sum()) == 0:
      return None
    bs = self.batch_size
    train = self.dataset.train
    label_shape = train.labels.shape[1:]

    def predict_fn(c, images):
      return predict_probs(self.eval_fn, model_for(c), images, bs, label_shape)

    per_site = site_metrics(predict_fn, train.images, train.labels, self.site_test)
    took_part = (np.ones(len(per_site), bool) if participated is None
                 else np.asarray(participated, bool))
    never = ~took_part
    return {
        "model": model,
        "sizes": [s["n"] for s in per_site],
        **summarize_sites(per_site, took_part),
        "recall": [s["recall"] for s in per_site],
        "never_sampled": ({"sites": np.flatnonzero(never).tolist(),
                           **{k: {m: v for m, v in d.items() if m != "per_site"}
                              for k, d in summarize_sites(per_site, never).items()}}
                          if never.any() else None),
    }
