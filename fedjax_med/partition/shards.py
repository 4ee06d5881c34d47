"""Pathological non-IID partition by label-sorted shards.

Cite: H. Brendan McMahan et al., "Communication-efficient learning of deep
networks from decentralized data", AISTATS 2017: sort the data by label, cut it
into ``num_clients * shards_per_client`` shards and give each client
``shards_per_client`` of them, so most clients see only that many classes.
"""

from __future__ import annotations

import numpy as np

from fedjax_med import errors
from fedjax_med.partition import base


def shards(
    labels: np.ndarray, num_clients: int, shards_per_client: int, seed: int
) -> base.Partition:
  """Deals label-sorted shards to clients.

  Examples are sorted by label (ties in random order), cut into
  ``num_clients * shards_per_client`` contiguous shards whose sizes differ by at
  most one, and each client gets ``shards_per_client`` shards chosen at random.
  A client therefore sees at most ``shards_per_client`` classes plus one per shard
  that straddles a class boundary.

  Args:
    labels: [N] or [N, 1] non-negative integer class ids, or [N, L] multi-hot
      labels, dealt by their ``label_summary`` (no finding / rarest finding).
    num_clients: the number of clients.
    shards_per_client: shards per client, >= 1.
    seed: a non-negative integer; the same seed gives the same partition.

  Returns:
    The partition.

  Raises:
    errors.ConfigError: invalid arguments, or more shards than examples.
  """
  labels = base.check_labels(labels)
  n = len(labels)
  num_clients = base.check_num_clients(num_clients, n)
  shards_per_client = base.check_int("shards_per_client", shards_per_client, minimum=1)
  num_shards = num_clients * shards_per_client
  if num_shards > n:
    raise errors.ConfigError(
        f"num_clients * shards_per_client = {num_clients} * {shards_per_client} = "
        f"{num_shards} shards exceed the {n} training examples; lower shards_per_client "
        "or num_clients"
    )
  rng = np.random.default_rng(base.check_seed(seed))
  order = np.lexsort((rng.random(n), labels))
  quotient, remainder = divmod(n, num_shards)
  shard_sizes = np.full(num_shards, quotient, np.int64)
  shard_sizes[:remainder] += 1
  client_of_shard = np.empty(num_shards, np.int64)
  client_of_shard[rng.permutation(num_shards)] = np.arange(num_shards) // shards_per_client
  owner = np.empty(n, np.int64)
  owner[order] = np.repeat(client_of_shard, shard_sizes)
  return base.Partition.from_assignment(owner, num_clients)
