"""Evaluation metrics (loss, accuracy, ROC-AUC) and the JSONL metrics log.

Loss and accuracy are accumulated over padded eval batches with masked
``clu.metrics`` collections; ROC-AUC needs every score, so it is computed on the
host from the gathered class probabilities (rank statistic, ties averaged),
the same definition as MedMNIST's evaluator: the positive-class score for
binary tasks, the mean of one-vs-rest AUCs for multi-class ones, and for a
multi-label task (ChestMNIST) the mean over labels of each label's AUC of its
sigmoid probability. Multi-label accuracy is MedMNIST's ACC: each label
predicted positive at probability > 0.5, the per-label accuracies averaged.
"""

# No ``from __future__ import annotations``: clu reads the metric classes from
# the dataclass annotations at runtime.
import json
import logging
import math
import os
import tempfile

import flax
import jax.numpy as jnp
import numpy as np
import optax
from clu import metrics as clu_metrics

from fedjax_med import tasks


@flax.struct.dataclass
class EvalMetrics(clu_metrics.Collection):
  loss: clu_metrics.Average.from_output("loss")
  accuracy: clu_metrics.Accuracy


@flax.struct.dataclass
class MultiLabelEvalMetrics(clu_metrics.Collection):
  """Multi-label: mean sigmoid BCE and MedMNIST's ACC (both averaged over the labels)."""

  loss: clu_metrics.Average.from_output("loss")
  accuracy: clu_metrics.Average.from_output("accuracy")


def eval_batch_metrics(logits, labels, mask, multi_label: bool = False):
  """Masked loss/accuracy of one padded batch (jit-able).

  Args:
    logits: [B, K].
    labels: [B] class ids, or (``multi_label``) [B, K] labels in {0, 1}.
    mask: [B] bool, False for padding.
    multi_label: ``MultiLabelEvalMetrics`` (mean BCE over the labels; accuracy
      at threshold 0.5 averaged over the labels) instead of ``EvalMetrics``.
  """
  labels = jnp.asarray(labels, jnp.int32)
  if multi_label:
    # Every example has all K labels, so the mean over examples of an example's
    # fraction of correct labels is the mean over labels of the per-label accuracy.
    return MultiLabelEvalMetrics.single_from_model_output(
        loss=tasks.example_loss(logits, labels, True),
        accuracy=tasks.example_accuracy(logits, labels, True), mask=mask)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return EvalMetrics.single_from_model_output(logits=logits, labels=labels, loss=loss, mask=mask)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
  """Area under the ROC curve of ``scores`` for the boolean ``positive``.

  Equals the probability that a random positive scores above a random
  negative (ties count 1/2): the Mann-Whitney U statistic. NaN if a class is absent.
  """
  scores = np.asarray(scores, np.float64)
  positive = np.asarray(positive, bool)
  n_pos, n_neg = int(positive.sum()), int((~positive).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  sorted_scores = scores[order]
  ranks = np.empty(len(scores), np.float64)
  # Average ranks over ties.
  boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
  starts = np.concatenate([[0], boundaries])
  ends = np.concatenate([boundaries, [len(scores)]])
  avg = (starts + ends + 1) / 2.0  # 1-based average rank of each tie group
  ranks[order] = np.repeat(avg, ends - starts)
  u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def per_label_auc(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """[L] ROC-AUC of each label's probability ``probs[:, l]`` for ``labels[:, l] == 1``.

  NaN for a label whose column holds one value only (no positive or no negative).
  """
  labels = np.asarray(labels)
  if labels.shape != probs.shape:
    raise ValueError(f"multi-label probs {probs.shape} and labels {labels.shape} differ")
  return np.array([roc_auc(probs[:, k], labels[:, k] == 1) for k in range(probs.shape[1])],
                  np.float64)


def auc(probs: np.ndarray, labels: np.ndarray) -> float:
  """ROC-AUC as MedMNIST reports it (binary: class-1 score; else mean one-vs-rest).

  ``labels`` [N] class ids, or [N, L] multi-hot labels (the same shape as
  ``probs``): then the mean of :func:`per_label_auc` over the labels where it
  is defined (MedMNIST's evaluator would fail on a label without both values).
  NaN when no class (label) has an AUC.
  """
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[1] > 1:
    per_label = per_label_auc(probs, labels)
    return float(np.nanmean(per_label)) if not np.all(np.isnan(per_label)) else float("nan")
  num_classes = probs.shape[1]
  if num_classes == 2:
    return roc_auc(probs[:, 1], labels == 1)
  per_class = [roc_auc(probs[:, k], labels == k) for k in range(num_classes)]
  return float(np.nanmean(per_class)) if not np.all(np.isnan(per_class)) else float("nan")


def to_jsonable(value):
  """Numpy/JAX scalars and arrays -> plain Python for json.dumps; NaN and +-inf -> None.

  JSON has no non-finite numbers (``json.dumps`` would write bare ``NaN``, which
  strict parsers reject): they become ``null``; ``JsonlWriter`` also lists the
  affected fields under ``"nonfinite"``.
  """
  if isinstance(value, dict):
    return {k: to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if hasattr(value, "tolist"):
    return to_jsonable(value.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def nonfinite_fields(record: dict) -> list[str]:
  """Top-level numeric fields of ``record`` that are NaN or infinite."""
  return sorted(k for k, v in record.items()
                if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)))


def write_json_atomic(path, obj) -> None:
  """Writes ``obj`` as JSON to ``path`` atomically: a synced temporary file, then ``os.replace``.

  A reader (or a crash mid-write) never sees a half-written file; the directory
  is created if missing and the temporary file is removed on failure.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(to_jsonable(obj), f, indent=2, sort_keys=True, allow_nan=False)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


class JsonlWriter:
  """Appends one strict-JSON object a line to ``metrics.jsonl``.

  On resume, ``truncate_after(round)`` drops records of rounds that the
  restored checkpoint had not reached (and a line torn by a kill), so a resumed
  run's log equals an uninterrupted one.
  """

  def __init__(self, path: str):
    self.path = path

  def truncate_after(self, last_round: int) -> None:
    if not os.path.exists(self.path):
      return
    kept = [r for r in read_jsonl(self.path) if r.get("round", 0) <= last_round]
    tmp = f"{self.path}.tmp"
    with open(tmp, "w") as f:
      for r in kept:
        f.write(json.dumps(r, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, self.path)

  def write(self, record: dict) -> None:
    bad = nonfinite_fields(record)
    if bad:
      record = {**record, "nonfinite": bad}
    with open(self.path, "a") as f:
      f.write(json.dumps(to_jsonable(record), sort_keys=True, allow_nan=False) + "\n")
      f.flush()


def read_jsonl(path: str) -> list[dict]:
  """The records of a JSONL file; a line that does not parse (torn by a kill) is skipped
  with a warning."""
  records = []
  with open(path) as f:
    for i, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        records.append(json.loads(line))
      except ValueError:
        logging.getLogger(__name__).warning("%s line %d is not JSON (torn write?); skipped",
                                            path, i)
  return records


class EventWriter:
  """TensorBoard event files (``tensorboardX``, no TensorFlow) mirroring ``metrics.jsonl``.

  Every numeric field of a record goes to ``<split>/<field>`` at step ``round``
  (``train/loss``, ``test/balanced_accuracy``, ``analysis/lambda_max``...);
  ``text(tag, value)`` stores e.g. the resolved config. A resumed run appends a
  new event file; TensorBoard shows the latest value of a repeated step.
  """

  def __init__(self, directory: str):
    import tensorboardX  # imported here: only the trainer writes events

    self._writer = tensorboardX.SummaryWriter(directory)

  def write(self, record: dict) -> None:
    split, step = record.get("split", "train"), int(record.get("round", 0))
    for key, value in record.items():
      if key in ("round", "split") or isinstance(value, bool):
        continue
      if isinstance(value, (int, float, np.number)) and math.isfinite(float(value)):
        self._writer.add_scalar(f"{split}/{key}", float(value), step)

  def text(self, tag: str, value: str) -> None:
    self._writer.add_text(tag, value, 0)

  def close(self) -> None:
    self._writer.close()
