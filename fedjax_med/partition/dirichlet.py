"""Label-skewed partitions with Dirichlet class proportions.

Two schemes, both with concentration ``alpha`` (small = skewed, large = IID):

- ``method="per_client"`` (default): Hsu, Qi and Brown, "Measuring the effects
  of non-identical data distribution for federated visual classification",
  2019 (arXiv:1909.06335). Every client gets an equal share of the examples and
  its own class mix ``q_c ~ Dir(alpha * 1)``; its examples are drawn class by
  class from what is left of the pool (a class that runs out is dropped from
  the mix). Works for any number of classes, binary tasks included.
- ``method="per_class"``: Yurochkin et al. 2019 / Li et al. 2022 (NIID-Bench).
  Each class is split over the clients in proportions ``Dir(alpha * 1)``,
  redrawn until every client has ``min_size`` examples; client sizes vary too.
  With few classes and small ``alpha`` this may find no valid draw.
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
    method: str = "per_client",
) -> base.Partition:
  """Dirichlet label skew (see the module doc for the two ``method`` s).

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
    max_tries: how many draws to try before giving up (``per_class``).
    method: ``"per_client"`` (Hsu et al.) or ``"per_class"`` (NIID-Bench).

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
  if method == "per_client":
    return _per_client(labels, num_clients, alpha, rng)
  if method != "per_class":
    raise errors.ConfigError(
        f"dirichlet method must be 'per_client' or 'per_class', got {method!r}"
    )

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


def _per_client(labels: np.ndarray, num_clients: int, alpha: float, rng) -> base.Partition:
  n = len(labels)
  class_sizes = np.bincount(labels)
  num_classes = len(class_sizes)
  mix = rng.dirichlet(np.full(num_classes, alpha), size=num_clients)  # [C, K]
  sizes = np.full(num_clients, n // num_clients)
  sizes[: n % num_clients] += 1
  left = class_sizes.copy()
  counts = np.zeros((num_clients, num_classes), np.int64)
  for c in rng.permutation(num_clients):  # random order: no client is always last
    need = sizes[c]
    while need > 0:
      p = mix[c] * (left > 0)
      if p.sum() <= 0:  # its classes ran out: take from what is left, by size
        p = left.astype(np.float64)
      take = np.minimum(rng.multinomial(need, p / p.sum()), left)
      counts[c] += take
      left -= take
      need -= take.sum()
  # Deal each class's shuffled examples to clients in the amounts counts[:, k].
  order = np.lexsort((rng.random(n), labels))
  owner = np.empty(n, np.int64)
  owner[order] = np.repeat(np.tile(np.arange(num_clients), num_classes), counts.T.reshape(-1))
  return base.Partition.from_assignment(owner, num_clients)
