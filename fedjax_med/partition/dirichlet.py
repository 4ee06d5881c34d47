"""Label-skewed partition with Dirichlet class proportions.

Cite: Tzu-Ming Harry Hsu, Hang Qi, Matthew Brown, "Measuring the effects of
non-identical data distribution for federated visual classification", 2019
(arXiv:1909.06335). For each class, the share of each client is drawn from
``Dir(alpha * 1)``: small ``alpha`` gives each client few classes, large ``alpha``
approaches IID. Redrawing until every client has ``min_size`` examples follows
the common implementation of Yurochkin et al. 2019 and Li et al. 2022
(NIID-Bench).
"""

from __future__ import annotations

import numpy as np

from fedjax_med import errors
from fedjax_med.partition import base


def dirichlet(
    labels: np.ndarray,
    num_clients: int,
    alpha: float,
    seed: int,
    *,
    min_size: int = 1,
    max_tries: int = 1000,
) -> base.Partition:
  """Splits each class among clients in Dirichlet-distributed proportions.

  Each draw takes ``p[k] ~ Dir(alpha * 1)`` over clients for every class ``k`` and
  cuts that class's shuffled examples at ``floor(cumsum(p[k]) * n_k)``. Draws are
  repeated (up to ``max_tries``) until every client has at least ``min_size``
  examples.

  Args:
    labels: [N] or [N, 1] non-negative integer class ids.
    num_clients: the number of clients.
    alpha: Dirichlet concentration, > 0 (e.g. 0.1 strongly skewed, 100 near IID).
    seed: a non-negative integer; the same seed gives the same partition.
    min_size: the fewest examples a client may get.
    max_tries: how many draws to try before giving up.

  Returns:
    The partition.

  Raises:
    errors.ConfigError: invalid arguments, or no draw in ``max_tries`` met
      ``min_size``.
  """
  labels = base.check_labels(labels)
  n = len(labels)
  min_size = base.check_int("min_size", min_size, minimum=0)
  num_clients = base.check_num_clients(num_clients, n, min_size=min_size)
  alpha = base.check_float("alpha", alpha, positive=True)
  max_tries = base.check_int("max_tries", max_tries, minimum=1)
  rng = np.random.default_rng(base.check_seed(seed))

  class_sizes = np.bincount(labels)  # [K]
  num_classes = len(class_sizes)
  for _ in range(max_tries):
    p = rng.dirichlet(np.full(num_clients, alpha), size=num_classes)  # [K, num_clients]
    cuts = np.floor(np.cumsum(p, axis=1)[:, :-1] * class_sizes[:, None]).astype(np.int64)
    cuts = np.clip(cuts, 0, class_sizes[:, None])
    bounds = np.concatenate(
        [np.zeros((num_classes, 1), np.int64), cuts, class_sizes[:, None]], axis=1
    )
    counts = np.diff(bounds, axis=1)  # [K, num_clients] examples of class k to each client
    if counts.sum(0).min() >= min_size:
      break
  else:
    raise errors.ConfigError(
        f"dirichlet partition: in {max_tries} draws some client always had fewer than "
        f"min_size={min_size} examples (N={n}, num_clients={num_clients}, alpha={alpha}); "
        "lower min_size or num_clients, or raise alpha"
    )
  # Examples ordered by class, shuffled within each class; class k's run is then
  # dealt to clients 0, 1, ... in the amounts counts[k].
  order = np.lexsort((rng.random(n), labels))
  owner = np.empty(n, np.int64)
  owner[order] = np.repeat(np.tile(np.arange(num_clients), num_classes), counts.reshape(-1))
  return base.Partition.from_assignment(owner, num_clients)
