"""Seed statistics: mean and 95% Student-t confidence half-width, for numbers and curves."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Two-sided 95% Student t quantiles t_{0.975, dof} for dof = 1..30 (beyond: 1.96).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(dof: int) -> float:
  """t_{0.975, dof}; the normal 1.96 beyond 30 degrees of freedom."""
  return _T975[dof - 1] if 1 <= dof <= len(_T975) else 1.96


def mean_ci(values: Sequence[float | None]) -> tuple[float, float, int]:
  """(mean, 95% CI half-width, n) of the finite values; half-width NaN for n < 2."""
  v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
  n = len(v)
  if n == 0:
    return math.nan, math.nan, 0
  if n == 1:
    return float(v[0]), math.nan, 1
  return float(v.mean()), float(t_quantile(n - 1) * v.std(ddof=1) / math.sqrt(n)), n


def mean_curve(curves: Sequence[list], x: str, y: str = "accuracy"):
  """Seed-mean of evaluation curves aligned by evaluation index.

  Args:
    curves: one list of evaluation records (dicts) per run; empty ones are ignored.
    x: the record field of the x axis (its mean over runs is used).
    y: the record field averaged.

  Returns:
    ``(xs, mean ys, 95% CI half-widths)``, as long as the shortest curve.
  """
  curves = [c for c in curves if c]
  if not curves:
    return [], [], []
  n = min(len(c) for c in curves)
  xs = [float(np.mean([c[i].get(x, np.nan) for c in curves])) for i in range(n)]
  stats = [mean_ci([c[i][y] for c in curves]) for i in range(n)]
  return xs, [s[0] for s in stats], [s[1] for s in stats]
