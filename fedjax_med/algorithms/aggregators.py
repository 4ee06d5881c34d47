"""Aggregators: how the server turns the clients' deltas into one pseudo-gradient.

An :class:`Aggregator` is the seam between the client map and the server
update (``base.federated_round``); every algorithm aggregates through it, so a
new aggregation rule (a robust one: median, trimmed mean, Krum, ...) plugs in
here without touching the algorithms.

Two shapes exist because memory differs:

- **streaming** (``streaming=True``): the client map sums ``weight_c * delta_c``
  chunk by chunk, so memory follows the chunk, not the number of clients;
  ``aggregate(delta_sum, weight_sum)`` finishes the job. The weighted mean is
  streaming.
- **stacked** (``streaming=False``): the client map returns every client's
  delta, stacked ``[C, ...]`` (memory ``C x params``), and
  ``aggregate(deltas, weights)`` sees them all: what order statistics and
  distance-based rules need. Padding clients have weight 0 and must drop out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.algorithms import aggregate


class Aggregator(NamedTuple):
  """``aggregate(deltas_or_sum, weights) -> pseudo_grad`` and which of the two it takes."""

  name: str
  streaming: bool  # True: (delta_sum, weight_sum []); False: (deltas [C, ...], weights [C])
  aggregate: Callable[[types.PyTree, types.Array], types.PyTree]


def _divide(delta_sum: types.PyTree, weight_sum: types.Array) -> types.PyTree:
  total = jnp.maximum(weight_sum, aggregate.EPS)
  return jax.tree.map(lambda d: d / total.astype(d.dtype), delta_sum)


def mean() -> Aggregator:
  """The weighted mean ``sum_c w_c delta_c / sum_c w_c`` (FedAvg), streamed over chunks."""
  return Aggregator("mean", True, _divide)


def stacked_mean() -> Aggregator:
  """The same weighted mean computed from the stacked deltas.

  Costs ``C x params`` memory; it exists as the reference shape of a stacked
  aggregator (tests check it equals :func:`mean`).
  """
  return Aggregator("stacked_mean", False, aggregate.weighted_mean)


AGGREGATORS: dict[str, Callable[[], Aggregator]] = {"mean": mean, "stacked_mean": stacked_mean}


def get(name: str) -> Aggregator:
  """The aggregator registered as ``name``.

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  if name not in AGGREGATORS:
    raise ValueError(f"unknown aggregator {name!r}; choose one of {sorted(AGGREGATORS)}")
  return AGGREGATORS[name]()
