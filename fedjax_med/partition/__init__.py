"""Partitions of a training split into clients: seeded numpy, no JAX.

Each kind maps ``(labels or N, num_clients, seed, ...)`` to a :class:`Partition`
that gives every training example to exactly one client. :func:`make_partition`
picks the kind by name (the config's ``partition.kind``). Multi-label data
(ChestMNIST) is partitioned and measured on a one-class-per-example
:func:`label_summary`: no finding, or the example's rarest finding.
"""

from __future__ import annotations

import numpy as np

from fedjax_med import errors
from fedjax_med.partition.base import (
    Partition,
    check_labels,
    check_partition,
    heterogeneity,
    is_multi_label,
    label_histogram,
    label_summary,
    summarize,
)
from fedjax_med.partition.dirichlet import dirichlet
from fedjax_med.partition.iid import iid
from fedjax_med.partition.quantity import QUANTITY_KINDS, quantity
from fedjax_med.partition.shards import shards

KINDS = ("iid", "dirichlet", "shards", "quantity")


def make_partition(
    kind: str,
    labels: np.ndarray,
    num_clients: int,
    seed: int,
    *,
    alpha: float = 0.5,
    min_size: int = 1,
    shards_per_client: int = 2,
    quantity_kind: str = "lognormal",
    quantity_sigma: float = 1.0,
    power_exponent: float = 1.5,
    dirichlet_method: str = "per_client",
) -> Partition:
  """Builds the partition named ``kind``.

  Only the arguments of the chosen kind are used: ``alpha`` and ``min_size`` for
  ``"dirichlet"``; ``shards_per_client`` for ``"shards"``; ``quantity_kind``,
  ``quantity_sigma``, ``power_exponent`` and ``min_size`` for ``"quantity"``.

  Args:
    kind: one of :data:`KINDS`.
    labels: [N] or [N, 1] class ids of the training split, or [N, L] multi-hot
      labels: ``"dirichlet"`` and ``"shards"`` then deal their
      :func:`label_summary` (0 = no finding, ``1 + l`` = the example's rarest
      finding); ``"iid"`` and ``"quantity"`` only use N.
    num_clients: the number of clients.
    seed: a non-negative integer.
    alpha: Dirichlet concentration.
    min_size: the fewest examples per client (dirichlet, quantity).
    shards_per_client: shards per client.
    quantity_kind: ``"lognormal"`` or ``"power_law"``.
    quantity_sigma: log-normal shape.
    power_exponent: power-law exponent.
    dirichlet_method: ``"per_client"`` (Hsu et al. 2019) or ``"per_class"`` (NIID-Bench).

  Returns:
    The partition.

  Raises:
    errors.ConfigError: unknown ``kind`` or invalid arguments for it.
  """
  num_examples = len(labels)
  if kind == "iid":
    return iid(num_examples, num_clients, seed)
  if kind == "dirichlet":
    return dirichlet(labels, num_clients, alpha, seed, min_size=min_size, method=dirichlet_method)
  if kind == "shards":
    return shards(labels, num_clients, shards_per_client, seed)
  if kind == "quantity":
    return quantity(
        num_examples,
        num_clients,
        seed,
        kind=quantity_kind,
        sigma=quantity_sigma,
        exponent=power_exponent,
        min_size=min_size,
    )
  raise errors.ConfigError(
      f"unknown partition kind {kind!r}; valid kinds: {', '.join(KINDS)}"
  )


__all__ = [
    "KINDS",
    "QUANTITY_KINDS",
    "Partition",
    "check_labels",
    "check_partition",
    "dirichlet",
    "heterogeneity",
    "iid",
    "is_multi_label",
    "label_histogram",
    "label_summary",
    "make_partition",
    "quantity",
    "shards",
    "summarize",
]
