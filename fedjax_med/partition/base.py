"""The :class:`Partition` type, its validation helpers and its JSON summary.

A partition assigns every training example to exactly one client. It is stored
CSR-style: ``indices`` lists the example indices grouped by client (sorted within
each client) and ``offsets`` marks where each client's group starts, so client
``i`` owns ``indices[offsets[i]:offsets[i + 1]]``. Everything here is seeded numpy;
nothing imports JAX.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from fedjax_med import errors


class Partition(NamedTuple):
  """Training-example indices grouped by client.

  Attributes:
    indices: [N] int64 example indices, grouped by client, sorted within a client.
    offsets: [num_clients + 1] int64; client ``i`` owns
      ``indices[offsets[i]:offsets[i + 1]]``.
  """

  indices: np.ndarray  # [N] int64
  offsets: np.ndarray  # [num_clients + 1] int64

  @property
  def num_clients(self) -> int:
    return len(self.offsets) - 1

  @property
  def sizes(self) -> np.ndarray:
    """[num_clients] int64 number of examples of each client."""
    return np.diff(self.offsets)

  def client(self, i: int) -> np.ndarray:
    """The example indices of client ``i`` (a view, do not modify)."""
    if not -self.num_clients <= i < self.num_clients:
      raise IndexError(f"client {i} out of range for {self.num_clients} clients")
    i %= self.num_clients
    return self.indices[self.offsets[i] : self.offsets[i + 1]]

  def client_of_example(self) -> np.ndarray:
    """[N] int64: the client that owns each example (the inverse mapping).

    Assumes the partition covers ``arange(N)`` exactly (see :func:`check_partition`).
    """
    owner = np.empty(len(self.indices), np.int64)
    owner[self.indices] = np.repeat(np.arange(self.num_clients, dtype=np.int64), self.sizes)
    return owner

  @classmethod
  def from_lists(cls, lists: Sequence[Sequence[int] | np.ndarray]) -> Partition:
    """Builds a partition from one array of example indices per client.

    Args:
      lists: ``lists[i]`` holds the example indices of client ``i``; kept in the given
        order (no sorting, no validation: call :func:`check_partition`).

    Returns:
      The partition.
    """
    arrays = [np.asarray(a, dtype=np.int64).reshape(-1) for a in lists]
    sizes = np.array([len(a) for a in arrays], dtype=np.int64)
    indices = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    return cls(indices=indices, offsets=_offsets(sizes))

  @classmethod
  def from_assignment(cls, owner: np.ndarray, num_clients: int) -> Partition:
    """Builds a partition from the owning client of each example.

    Args:
      owner: [N] int, ``owner[j]`` is the client of example ``j``, in
        ``[0, num_clients)``.
      num_clients: the number of clients (clients owning nothing get size 0).

    Returns:
      The partition, with indices sorted within each client.
    """
    owner = np.asarray(owner, dtype=np.int64)
    # A stable sort by owner keeps example indices ascending within each client.
    indices = np.argsort(owner, kind="stable").astype(np.int64)
    sizes = np.bincount(owner, minlength=num_clients).astype(np.int64)
    return cls(indices=indices, offsets=_offsets(sizes))


def _offsets(sizes: np.ndarray) -> np.ndarray:
  return np.concatenate([np.zeros(1, np.int64), np.cumsum(sizes, dtype=np.int64)])


def check_partition(partition: Partition, num_examples: int) -> None:
  """Raises ConfigError unless ``partition`` gives each of ``num_examples`` to one client.

  Args:
    partition: the partition to check.
    num_examples: N, the number of training examples.

  Raises:
    errors.ConfigError: the offsets are malformed, or some example is missing,
      duplicated or out of range.
  """
  offsets = np.asarray(partition.offsets)
  if offsets.ndim != 1 or len(offsets) < 2 or offsets[0] != 0:
    raise errors.ConfigError("partition offsets must be [num_clients + 1] starting at 0")
  if np.any(np.diff(offsets) < 0) or offsets[-1] != len(partition.indices):
    raise errors.ConfigError(
        "partition offsets must be non-decreasing and end at len(indices) "
        f"({len(partition.indices)}), got last offset {offsets[-1]}"
    )
  if len(partition.indices) != num_examples:
    raise errors.ConfigError(
        f"partition holds {len(partition.indices)} examples but the training split has "
        f"{num_examples}: every example must belong to exactly one client"
    )
  counts = np.bincount(
      np.clip(partition.indices, 0, max(num_examples - 1, 0)), minlength=num_examples
  )
  bad_range = np.any((partition.indices < 0) | (partition.indices >= num_examples))
  if bad_range or np.any(counts != 1):
    raise errors.ConfigError(
        "partition must use each example index in [0, num_examples) exactly once "
        f"(missing or repeated: {int(np.sum(counts != 1))}, out of range: {bool(bad_range)})"
    )


# ----------------------------------------------------------------------------- validation


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
  """Returns ``value`` as an int, or raises ConfigError naming ``name``."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise errors.ConfigError(f"{name} must be an integer, got {value!r}")
  value = int(value)
  if minimum is not None and value < minimum:
    raise errors.ConfigError(f"{name} must be >= {minimum}, got {value}")
  return value


def check_float(name: str, value: Any, *, positive: bool = False) -> float:
  """Returns ``value`` as a finite float (> 0 if ``positive``, else >= 0)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise errors.ConfigError(f"{name} must be a number, got {value!r}")
  value = float(value)
  if not np.isfinite(value):
    raise errors.ConfigError(f"{name} must be finite, got {value}")
  if positive and value <= 0:
    raise errors.ConfigError(f"{name} must be > 0, got {value}")
  if not positive and value < 0:
    raise errors.ConfigError(f"{name} must be >= 0, got {value}")
  return value


def check_num_clients(num_clients: Any, num_examples: int, *, min_size: int = 0) -> int:
  """Checks ``1 <= num_clients`` and ``num_clients * max(min_size, 1) <= num_examples``."""
  num_clients = check_int("num_clients", num_clients, minimum=1)
  if num_clients > num_examples:
    raise errors.ConfigError(
        f"num_clients={num_clients} exceeds the {num_examples} training examples: "
        "every client needs at least one example; lower num_clients"
    )
  if num_clients * min_size > num_examples:
    raise errors.ConfigError(
        f"num_clients * min_size = {num_clients} * {min_size} = {num_clients * min_size} "
        f"exceeds the {num_examples} training examples; lower min_size or num_clients"
    )
  return num_clients


def check_seed(seed: Any) -> int:
  """Seeds must be non-negative integers (``np.random.SeedSequence`` requires it)."""
  return check_int("seed", seed, minimum=0)


def is_multi_label(labels: Any) -> bool:
  """``[N, L]`` multi-hot labels with L > 1 (not MedMNIST's ``[N, 1]`` class ids)."""
  return np.ndim(labels) == 2 and np.shape(labels)[1] > 1


def label_summary(labels: Any) -> np.ndarray:
  """One class per example of multi-label data: 0 = no finding, ``1 + l`` = its rarest finding.

  Label-skew partitions (Dirichlet, shards) and the skew measures need one class
  per example. An example with no positive label (ChestMNIST: "no finding")
  is class 0; any other is ``1 + l`` for ``l`` the finding it has that is the
  rarest in ``labels`` (fewest positives; ties to the lower index). The
  rarest, not the most frequent: an example with a rare finding often has a
  common one too, so summarizing by the most frequent would hide the rare
  findings inside the common ones' classes and a skewed partition would only
  move the common ones. Taking rare labels first is also how multi-label data
  is stratified (Sechidis et al., "On the stratification of multi-label data",
  ECML PKDD 2011). A Dirichlet partition of the summary thus skews both how
  many healthy patients a site sees and which findings its sick patients have.

  Rank the findings on the whole training split, as ``make_partition`` and
  ``heterogeneity`` do: the summary of a subset may rank them differently.

  Args:
    labels: [N, L] multi-hot labels, integers in {0, 1}, L >= 2.

  Returns:
    [N] int64 summary classes in ``[0, L]``.

  Raises:
    errors.ConfigError: not [N, L] labels in {0, 1}.
  """
  labels = np.asarray(labels)
  if not is_multi_label(labels):
    raise errors.ConfigError(
        f"label_summary needs [N, L] multi-hot labels with L >= 2, got shape {labels.shape}")
  if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
    raise errors.ConfigError(f"multi-label labels must be integers, got dtype {labels.dtype}")
  if labels.size and (labels.min() < 0 or labels.max() > 1):
    raise errors.ConfigError(
        f"multi-label labels must be 0 or 1, got values in [{labels.min()}, {labels.max()}]")
  num_labels = labels.shape[1]
  positives = labels.astype(np.int64).sum(0)  # [L]
  rarest_first = np.lexsort((np.arange(num_labels), positives))  # [L] label ids
  rank = np.empty(num_labels, np.int64)
  rank[rarest_first] = np.arange(num_labels)
  best = np.where(labels > 0, rank[None, :], num_labels).min(1)  # [N]; L = no finding
  return np.where(best == num_labels, 0,
                  rarest_first[np.minimum(best, num_labels - 1)] + 1).astype(np.int64)


def check_labels(labels: Any) -> np.ndarray:
  """Returns one class id per example as a [N] int64 array.

  Args:
    labels: [N] or [N, 1] (MedMNIST's layout) non-negative integer labels, or
      [N, L] multi-hot labels (ChestMNIST), which become their
      :func:`label_summary` (0 = no finding, ``1 + l`` = the rarest finding).

  Returns:
    [N] int64 labels.

  Raises:
    errors.ConfigError: empty, non-integer or negative labels, or multi-hot
      labels outside {0, 1}.
  """
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  if is_multi_label(labels) and len(labels):
    return label_summary(labels)
  if labels.ndim != 1 and len(labels):
    raise errors.ConfigError(
        f"label-based partitions need [N] or [N, 1] class ids or [N, L] multi-hot labels, got "
        f"shape {labels.shape}"
    )
  if len(labels) == 0:
    raise errors.ConfigError("cannot partition an empty training split")
  if not np.issubdtype(labels.dtype, np.integer):
    raise errors.ConfigError(f"labels must be integers, got dtype {labels.dtype}")
  if labels.min() < 0:
    raise errors.ConfigError(f"labels must be >= 0, got minimum {labels.min()}")
  return labels.astype(np.int64)


# ----------------------------------------------------------------------------- summary

# What the classes of a multi-label partition summary are (partition.json).
SUMMARY_CLASSES = "0 = no finding; 1 + l = finding l, the example's rarest in the training split"


def label_histogram(partition: Partition, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """[num_clients, num_classes] int64 label counts of each client.

  Args:
    partition: the partition (covering ``arange(N)``).
    labels: [N] or [N, 1] class ids, or [N, L] multi-hot labels (then the counts
      are positives per label).
    num_classes: the number of classes (histogram width).

  Returns:
    The histogram; for single-label data its rows sum to ``partition.sizes``.

  Raises:
    errors.ConfigError: labels out of range or of the wrong shape.
  """
  num_classes = check_int("num_classes", num_classes, minimum=1)
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[1] == 1:
    labels = labels[:, 0]
  k = partition.num_clients
  if labels.ndim == 1:
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
      raise errors.ConfigError(
          f"labels must lie in [0, num_classes={num_classes}), got "
          f"[{labels.min()}, {labels.max()}]"
      )
    owner = np.repeat(np.arange(k, dtype=np.int64), partition.sizes)
    flat = owner * num_classes + labels[partition.indices].astype(np.int64)
    hist = np.bincount(flat, minlength=k * num_classes).reshape(k, num_classes)
  elif labels.ndim == 2 and labels.shape[1] == num_classes:
    # Segment sums through a cumulative sum (np.add.reduceat mishandles empty clients).
    csum = np.concatenate(
        [np.zeros((1, num_classes), np.int64), np.cumsum(labels[partition.indices], 0)]
    )
    hist = csum[partition.offsets[1:]] - csum[partition.offsets[:-1]]
  else:
    raise errors.ConfigError(
        f"labels must be [N], [N, 1] or [N, num_classes={num_classes}], got {labels.shape}"
    )
  return hist.astype(np.int64)


def _summary_histogram(partition: Partition, labels: np.ndarray, num_classes: int
                       ) -> np.ndarray:
  """``label_histogram`` of single-label data; of the ``label_summary`` of multi-hot labels
  ([num_clients, L + 1]: no finding, then each rarest finding)."""
  if not is_multi_label(labels):
    return label_histogram(partition, labels, num_classes)
  num_classes = check_int("num_classes", num_classes, minimum=1)
  if np.shape(labels)[1] != num_classes:
    raise errors.ConfigError(
        f"multi-label labels must be [N, num_classes={num_classes}], got {np.shape(labels)}")
  return label_histogram(partition, label_summary(labels), num_classes + 1)


def heterogeneity(partition: Partition, labels: np.ndarray, num_classes: int) -> dict[str, float]:
  """The label and quantity skew a partition realizes, as a few scalars.

  A client's label mix is its normalised label histogram (see
  :func:`label_histogram`); clients with no labels are left out of the label
  measures. Multi-label data is measured on its :func:`label_summary` (the
  classes the label-skew partitions deal): ``num_classes + 1`` summary classes,
  no finding and each rarest finding.

  Args:
    partition: the partition (covering ``arange(N)``).
    labels: [N] or [N, 1] class ids, or [N, L] multi-hot labels.
    num_classes: the number of classes (multi-label: L).

  Returns:
    A dict of floats: ``label_tv_mean`` and ``label_tv_max``, the mean and largest
    total-variation distance ``0.5 * sum_k |q_c(k) - p(k)|`` of a client's mix
    ``q_c`` from the global mix ``p`` (0 = IID, near 1 = disjoint classes);
    ``effective_classes_mean`` and ``effective_classes_min``, ``exp`` of the
    entropy of a client's mix (1 for a single-class client, ``num_classes`` for a
    uniform one); ``global_effective_classes``, the same for ``p`` (what IID
    clients approach); and ``size_cv``, the coefficient of variation (std / mean)
    of the client sizes (0 = equal sizes).
  """
  return _heterogeneity(_summary_histogram(partition, labels, num_classes), partition.sizes)


def _mixes(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Global mix [K], mixes [M, K] of the M clients with labels, their mask [C], their TV [M]."""
  global_hist = hist.sum(0)
  p_global = global_hist / max(global_hist.sum(), 1)
  totals = hist.sum(1)
  present = totals > 0
  p_client = hist[present] / totals[present, None]
  tv = 0.5 * np.abs(p_client - p_global).sum(1)
  return p_global, p_client, present, tv


def _heterogeneity(hist: np.ndarray, sizes: np.ndarray) -> dict[str, float]:
  p_global, p_client, _, tv = _mixes(hist)
  effective = _effective_classes(p_client)
  mean_size = sizes.mean() if len(sizes) else 0.0
  return {
      "label_tv_mean": float(tv.mean()) if len(tv) else 0.0,
      "label_tv_max": float(tv.max()) if len(tv) else 0.0,
      "effective_classes_mean": float(effective.mean()) if len(tv) else 0.0,
      "effective_classes_min": float(effective.min()) if len(tv) else 0.0,
      "global_effective_classes": float(_effective_classes(p_global[None])[0]),
      "size_cv": float(sizes.std() / mean_size) if mean_size > 0 else 0.0,
  }


def _effective_classes(p: np.ndarray) -> np.ndarray:
  """[M] ``exp`` of the entropy of each row of ``p`` [M, K] (with ``0 log 0 = 0``)."""
  logp = np.log(np.where(p > 0, p, 1.0))
  return np.exp(-(p * logp).sum(1))


def summarize(partition: Partition, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
  """A JSON-serialisable description of a partition and its label skew.

  Label skew is the total-variation (TV) distance
  ``0.5 * sum_k |p_client(k) - p_global(k)|`` between each client's label
  distribution and the global one: 0 for a perfectly IID client, 1 for a client
  whose classes are disjoint from the rest. Multi-label ``[N, L]`` labels are
  described by their :func:`label_summary` (what the label-skew partitions
  deal): ``label_histogram`` and every skew measure are over its L + 1 classes
  (no finding, then each rarest finding); ``finding_histogram`` adds the
  positives of each label per client.

  Args:
    partition: the partition (covering ``arange(N)``).
    labels: [N] or [N, 1] class ids, or [N, L] multi-hot labels.
    num_classes: the number of classes (histogram width; multi-label: L).

  Returns:
    A dict with ``num_clients``, ``num_examples``, ``sizes`` (list),
    ``size_stats`` (min/median/max/mean/std), ``label_histogram`` (list of
    per-client lists, summing to ``sizes`` for single-label data),
    ``global_label_histogram``, ``classes_per_client`` (min/median/max/mean of
    the number of classes present), ``label_skew_tv`` (mean TV distance over
    non-empty clients), ``label_skew_tv_weighted`` (weighted by size) and
    ``heterogeneity`` (the dict of :func:`heterogeneity`); multi-label also
    ``label_summary`` (what the classes are) and ``finding_histogram``.
  """
  hist = _summary_histogram(partition, labels, num_classes)
  sizes = partition.sizes
  _, _, present, tv = _mixes(hist)
  tv_weighted = float(np.average(tv, weights=sizes[present])) if sizes[present].sum() else 0.0
  classes = (hist > 0).sum(1)
  multi = {}
  if is_multi_label(labels):
    multi = {"label_summary": SUMMARY_CLASSES,
             "finding_histogram": label_histogram(partition, labels, num_classes).tolist()}
  return {
      "num_clients": int(partition.num_clients),
      "num_examples": int(sizes.sum()),
      "sizes": sizes.tolist(),
      "size_stats": _stats(sizes),
      "label_histogram": hist.tolist(),
      "global_label_histogram": hist.sum(0).tolist(),
      "classes_per_client": _stats(classes),
      "label_skew_tv": float(tv.mean()) if len(tv) else 0.0,
      "label_skew_tv_weighted": tv_weighted,
      "heterogeneity": _heterogeneity(hist, sizes),
      **multi,
  }


def _stats(x: np.ndarray) -> dict[str, float]:
  x = np.asarray(x, dtype=np.float64)
  if len(x) == 0:
    return {"min": 0.0, "median": 0.0, "max": 0.0, "mean": 0.0, "std": 0.0}
  return {
      "min": float(x.min()),
      "median": float(np.median(x)),
      "max": float(x.max()),
      "mean": float(x.mean()),
      "std": float(x.std()),
  }
