"""Per-site held-out data: each client keeps a seeded share of its own examples for testing.

FL-bench and FLamby evaluate a federated model on each site's own data. MedMNIST
has no per-site test split, so every client sets aside ``fraction`` of its
partition (drawn with a seed of its own) as its local test set; it trains on
the rest. The global val/test splits are untouched. Under site feature skew
the held-out images went through the client's own scanner like the rest of its
data, so a site is tested on what its scanner produces.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedjax_med import errors
from fedjax_med.partition.base import Partition


class Holdout(NamedTuple):
  train: Partition  # what each client trains on
  test: Partition  # each client's held-out examples (its local test set)


def split(partition: Partition, fraction: float, seed: int) -> Holdout:
  """Splits every client's examples into training and held-out shares.

  Client ``c`` holds out ``k_c = round(fraction * n_c)`` examples, at least one
  when ``n_c >= 2`` and at most ``n_c - 1`` (a client always keeps one example
  to train on), drawn without replacement with ``default_rng([seed, c])``.
  ``fraction = 0`` holds out nothing.

  Raises:
    errors.ConfigError: ``fraction`` outside ``[0, 0.9]``.
  """
  if not 0.0 <= fraction <= 0.9:
    raise errors.ConfigError(
        f"invalid --config.eval.site_holdout={fraction!r}: must be in [0, 0.9] (0 = off)")
  train, test = [], []
  for c in range(partition.num_clients):
    own = partition.client(c)
    n = len(own)
    k = 0 if fraction == 0 or n < 2 else min(n - 1, max(1, int(round(fraction * n))))
    held = np.zeros(n, bool)
    held[np.random.default_rng([seed, c]).choice(n, k, replace=False)] = True
    train.append(own[~held])
    test.append(own[held])
  return Holdout(Partition.from_lists(train), Partition.from_lists(test))
