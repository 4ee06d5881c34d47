"""Quantity-skewed partition: IID labels, unequal client sizes.

Client sizes follow a log-normal or a power (Pareto) law, as in the quantity
skew setting of Li et al., "Federated learning on non-IID data silos: an
experimental study", ICDE 2022 (NIID-Bench), and the log-normal client sizes of
LEAF (Caldas et al. 2018).
"""

from __future__ import annotations

import numpy as np

from fedjax_med import errors
from fedjax_med.partition import base

QUANTITY_KINDS = ("lognormal", "power_law")


def quantity(
    num_examples: int,
    num_clients: int,
    seed: int,
    *,
    kind: str = "lognormal",
    sigma: float = 1.0,
    exponent: float = 1.5,
    min_size: int = 1,
) -> base.Partition:
  """Deals a random permutation out in randomly unequal client sizes.

  Relative sizes ``w`` are drawn i.i.d. per client: ``LogNormal(0, sigma)`` for
  ``kind="lognormal"`` (``sigma=0`` gives equal sizes) or ``Pareto(exponent)``
  with minimum 1 for ``kind="power_law"`` (a smaller exponent is a heavier tail).
  Each client gets ``min_size`` examples plus its share ``w / sum(w)`` of the rest,
  rounded by largest remainder so that sizes sum to N exactly.

  Args:
    num_examples: N, the number of training examples.
    num_clients: the number of clients.
    seed: a non-negative integer; the same seed gives the same partition.
    kind: ``"lognormal"`` or ``"power_law"``.
    sigma: log-normal shape, >= 0.
    exponent: power-law (Pareto) exponent, > 0.
    min_size: the fewest examples a client may get.

  Returns:
    The partition.

  Raises:
    errors.ConfigError: invalid arguments.
  """
  num_examples = base.check_int("num_examples", num_examples, minimum=1)
  min_size = base.check_int("min_size", min_size, minimum=0)
  num_clients = base.check_num_clients(num_clients, num_examples, min_size=min_size)
  rng = np.random.default_rng(base.check_seed(seed))
  # Work with log w: a heavy power-law tail overflows float64 in w itself.
  if kind == "lognormal":
    log_w = rng.normal(0.0, base.check_float("sigma", sigma), num_clients)
  elif kind == "power_law":
    # log of a Pareto(exponent) variable with minimum 1 is Exponential(rate=exponent).
    exponent = base.check_float("exponent", exponent, positive=True)
    log_w = rng.standard_exponential(num_clients) / exponent
  else:
    raise errors.ConfigError(
        f"unknown quantity kind {kind!r}; valid kinds: {', '.join(QUANTITY_KINDS)}"
    )
  p = np.exp(log_w - log_w.max())
  sizes = np.full(num_clients, min_size, np.int64) + _largest_remainder(
      p / p.sum(), num_examples - num_clients * min_size
  )
  owner = np.empty(num_examples, np.int64)
  owner[rng.permutation(num_examples)] = np.repeat(np.arange(num_clients), sizes)
  return base.Partition.from_assignment(owner, num_clients)


def _largest_remainder(p: np.ndarray, total: int) -> np.ndarray:
  """Integer amounts proportional to ``p`` that sum to ``total`` exactly."""
  quota = p * total
  amounts = np.floor(quota).astype(np.int64)
  short = total - int(amounts.sum())
  # Float error can leave ``short`` slightly outside [0, len(p)); clip keeps it valid.
  short = int(np.clip(short, 0, len(p)))
  amounts[np.argsort(-(quota - amounts), kind="stable")[:short]] += 1
  # Any residue left by float error (|residue| is tiny) goes to the largest client.
  amounts[np.argmax(amounts)] += total - int(amounts.sum())
  return amounts
