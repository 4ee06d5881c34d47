"""IID partition: shuffle the training split and deal it out as evenly as possible."""

from __future__ import annotations

import numpy as np

from fedjax_med.partition import base


def iid(num_examples: int, num_clients: int, seed: int) -> base.Partition:
  """Splits a random permutation of ``arange(num_examples)`` into equal parts.

  Client sizes differ by at most one: the first ``num_examples % num_clients``
  clients get one extra example.

  Args:
    num_examples: N, the number of training examples.
    num_clients: the number of clients, in ``[1, N]``.
    seed: a non-negative integer; the same seed gives the same partition.

  Returns:
    The partition.

  Raises:
    errors.ConfigError: invalid ``num_clients``, ``num_examples`` or ``seed``.
  """
  num_examples = base.check_int("num_examples", num_examples, minimum=1)
  num_clients = base.check_num_clients(num_clients, num_examples)
  rng = np.random.default_rng(base.check_seed(seed))
  quotient, remainder = divmod(num_examples, num_clients)
  sizes = np.full(num_clients, quotient, np.int64)
  sizes[:remainder] += 1
  owner = np.empty(num_examples, np.int64)
  owner[rng.permutation(num_examples)] = np.repeat(np.arange(num_clients), sizes)
  return base.Partition.from_assignment(owner, num_clients)
