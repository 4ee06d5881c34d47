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

The robust aggregators (``median``, ``trimmed_mean``, ``krum``, ``multikrum``,
``geometric_median``, ``norm_bound``; the arithmetic is in ``robust``) are
stacked; they also drop clients whose delta has a non-finite entry.
``get(name, **params)`` builds one by name; ``PARAMS`` says which of the
``config.aggregator.*`` hyper-parameters (``DEFAULTS``) each takes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.algorithms import aggregate, robust


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


# config.aggregator.<key> -> default; each aggregator takes the keys PARAMS names.
DEFAULTS: Mapping[str, float | int] = MappingProxyType({
    "trim_fraction": 0.1,  # trimmed_mean: beta, dropped at each end per coordinate, [0, 0.5)
    "num_byzantine": 1,  # krum / multikrum: f, Byzantine clients tolerated (2f + 2 < clients)
    "multikrum_m": 0,  # multikrum: deltas averaged; 0 = n - f
    "gm_iters": 10,  # geometric_median: Weiszfeld iterations
    "gm_nu": 1e-6,  # geometric_median: smoothing nu (distances below it count as nu)
    "norm_bound": 1.0,  # norm_bound: L2 bound tau of every client delta
})


def _check(ok: bool, name: str, key: str, value, fix: str) -> None:
  if not ok:
    raise ValueError(f"{name}: {key}={value!r} {fix}")


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def median() -> Aggregator:
  """Coordinate-wise median of the real clients' deltas, unweighted (FedMedian)."""
  return Aggregator("median", False, robust.coordinate_median)


def trimmed_mean(trim_fraction: float = DEFAULTS["trim_fraction"]) -> Aggregator:
  """Coordinate-wise trimmed mean, unweighted: ``floor(beta n)`` dropped at each end."""
  _check(0 <= trim_fraction < 0.5, "trimmed_mean", "trim_fraction", trim_fraction,
         "must be in [0, 0.5)")
  return Aggregator("trimmed_mean", False,
                    functools.partial(robust.trimmed_mean, trim_fraction=float(trim_fraction)))


def _check_f(name: str, num_byzantine) -> None:
  _check(_is_int(num_byzantine) and num_byzantine >= 0, name, "num_byzantine", num_byzantine,
         "must be an integer >= 0")


def krum(num_byzantine: int = DEFAULTS["num_byzantine"]) -> Aggregator:
  """Krum: the delta closest to its ``n - f - 2`` nearest neighbours (Blanchard et al. 2017)."""
  _check_f("krum", num_byzantine)
  return Aggregator("krum", False, functools.partial(robust.krum, num_byzantine=num_byzantine))


def multikrum(num_byzantine: int = DEFAULTS["num_byzantine"],
              multikrum_m: int = DEFAULTS["multikrum_m"]) -> Aggregator:
  """Multi-Krum: the unweighted mean of the ``m`` best Krum scores (0 = ``n - f``)."""
  _check_f("multikrum", num_byzantine)
  _check(_is_int(multikrum_m) and multikrum_m >= 0, "multikrum", "multikrum_m", multikrum_m,
         "must be an integer >= 0 (0 = n - f)")
  return Aggregator("multikrum", False, functools.partial(
      robust.multi_krum, num_byzantine=num_byzantine, multikrum_m=multikrum_m))


def geometric_median(gm_iters: int = DEFAULTS["gm_iters"],
                     gm_nu: float = DEFAULTS["gm_nu"]) -> Aggregator:
  """RFA's client-weighted geometric median by smoothed Weiszfeld (Pillutla et al. 2022)."""
  _check(_is_int(gm_iters) and gm_iters >= 1, "geometric_median", "gm_iters", gm_iters,
         "must be an integer >= 1")
  _check(isinstance(gm_nu, (int, float)) and math.isfinite(gm_nu) and gm_nu > 0,
         "geometric_median", "gm_nu", gm_nu, "must be a finite number > 0")
  return Aggregator("geometric_median", False, functools.partial(
      robust.geometric_median, gm_iters=gm_iters, gm_nu=float(gm_nu)))


def norm_bound(norm_bound: float = DEFAULTS["norm_bound"]) -> Aggregator:
  """Every delta clipped to L2 norm ``norm_bound``, then the client-weighted mean (Sun et al. 2019)."""
  _check(isinstance(norm_bound, (int, float)) and math.isfinite(norm_bound) and norm_bound > 0,
         "norm_bound", "norm_bound", norm_bound, "must be a finite number > 0")
  return Aggregator("norm_bound", False, functools.partial(
      robust.norm_bounded_mean, norm_bound=float(norm_bound)))


AGGREGATORS: Mapping[str, Callable[..., Aggregator]] = MappingProxyType({
    "mean": mean,
    "stacked_mean": stacked_mean,
    "median": median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
    "multikrum": multikrum,
    "geometric_median": geometric_median,
    "norm_bound": norm_bound,
})
# The config.aggregator.* hyper-parameters each aggregator's builder takes.
PARAMS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mean": (),
    "stacked_mean": (),
    "median": (),
    "trimmed_mean": ("trim_fraction",),
    "krum": ("num_byzantine",),
    "multikrum": ("num_byzantine", "multikrum_m"),
    "geometric_median": ("gm_iters", "gm_nu"),
    "norm_bound": ("norm_bound",),
})


def get(name: str, **params) -> Aggregator:
  """The aggregator registered as ``name``, built with ``params`` (its ``PARAMS``; others ignored).

  Ignoring the hyper-parameters another aggregator takes lets a caller pass the
  whole ``config.aggregator`` section: ``get(name, **section)``.

  Raises:
    ValueError: unknown name (the message lists the known ones), a key that no
      aggregator takes, or a hyper-parameter out of range.
  """
  if name not in AGGREGATORS:
    raise ValueError(f"unknown aggregator {name!r}; choose one of {sorted(AGGREGATORS)}")
  unknown = sorted(set(params) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"unknown aggregator hyper-parameter(s) {unknown}; known: {list(DEFAULTS)}")
  return AGGREGATORS[name](**{k: params[k] for k in PARAMS[name] if k in params})


def stacked_delta_bytes(aggregator: Aggregator, num_clients: int, params: types.PyTree) -> int:
  """Memory of the stacked deltas a round holds: ``C x params x itemsize`` (0 when streaming).

  ``params``: the model's leaves or their shapes (``jax.eval_shape``).
  """
  if aggregator.streaming:
    return 0
  per_client = sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize
                   for x in jax.tree.leaves(params))
  return num_clients * per_client
