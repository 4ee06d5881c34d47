"""Seed statistics: 95% Student-t intervals, paired tests and the Holm correction.

``mean_ci`` and ``mean_curve`` summarize one group of runs over seeds;
``paired_test`` tests paired differences (paired t-test and Wilcoxon signed-rank,
both two-sided, through ``scipy.stats``); ``holm`` adjusts a family of p-values
(Holm 1979, step-down Bonferroni).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats as sp_stats

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


def holm(pvalues: Sequence[float]) -> list[float]:
  """Holm-adjusted p-values (step-down Bonferroni; Holm, Scand. J. Stat. 6:65, 1979).

  With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value
  of p_(k) is ``max_{j <= k} min(1, (m - j + 1) p_(j))``; rejecting every
  hypothesis whose adjusted value is <= alpha is Holm's procedure at level alpha
  (family-wise error <= alpha under any dependence).

  Args:
    pvalues: the family's raw p-values, each in [0, 1].

  Returns:
    The adjusted p-values, in the input order.
  """
  p = np.asarray(pvalues, np.float64)
  if p.size and not (np.all(np.isfinite(p)) and p.min() >= 0 and p.max() <= 1):
    raise ValueError(f"p-values must be finite and in [0, 1], got {list(p)}")
  m = len(p)
  adjusted = np.empty(m)
  running = 0.0
  for rank, i in enumerate(np.argsort(p, kind="stable")):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return [float(x) for x in adjusted]


# Wilcoxon p-values are exact for at most this many non-zero differences when some are tied
# (scipy enumerates all 2**n sign flips), and for at most _EXACT_MAX without ties.
_EXACT_TIED_MAX, _EXACT_MAX = 13, 50


@dataclasses.dataclass(frozen=True)
class PairedTest:
  """Tests of paired differences d_i = x_i - reference_i.

  Attributes:
    n: number of pairs.
    mean: mean difference.
    ci: 95% Student-t half-width of the mean difference (NaN for n < 2).
    t_p: two-sided paired t-test p-value (None when not tested, see ``note``).
    wilcoxon_p: two-sided Wilcoxon signed-rank p-value, zero differences dropped (None when
      not tested).
    wilcoxon_method: ``exact`` or ``normal approx.`` ('' when not tested).
    note: why a p-value is missing: ``no pairs``, ``fewer than 2 pairs``, ``all differences
      zero`` or ``constant difference`` (the t statistic is undefined); '' otherwise.
  """

  n: int
  mean: float
  ci: float
  t_p: float | None
  wilcoxon_p: float | None
  wilcoxon_method: str
  note: str


def paired_test(differences: Sequence[float]) -> PairedTest:
  """Paired t-test and Wilcoxon signed-rank test of differences against zero.

  The t-test is ``scipy.stats.ttest_1samp(d, 0)`` (the same as ``ttest_rel`` on the
  pairs); the Wilcoxon test is ``scipy.stats.wilcoxon(d[d != 0], method="auto")``:
  exact without ties for up to 50 non-zero differences, exact by enumerating all sign
  flips with ties for up to 13, else the normal approximation with continuity correction.

  Args:
    differences: the finite paired differences.

  Returns:
    A :class:`PairedTest`.
  """
  d = np.asarray(differences, np.float64)
  n = len(d)
  mean, ci, _ = mean_ci(d)
  if n < 2:
    return PairedTest(n, mean, ci, None, None, "", "fewer than 2 pairs" if n else "no pairs")
  if np.all(d == 0):
    return PairedTest(n, mean, ci, None, None, "", "all differences zero")
  nonzero = d[d != 0]
  tied = len(np.unique(np.abs(nonzero))) < len(nonzero)
  exact = len(nonzero) <= (_EXACT_TIED_MAX if tied else _EXACT_MAX)
  wilcoxon_p = float(sp_stats.wilcoxon(nonzero, alternative="two-sided", method="auto").pvalue)
  method = "exact" if exact else "normal approx."
  if np.std(d) <= 1e-12 * np.max(np.abs(d)):
    return PairedTest(n, mean, ci, None, wilcoxon_p, method, "constant difference")
  with warnings.catch_warnings():  # near-constant differences: scipy warns, the p-value stands
    warnings.simplefilter("ignore", RuntimeWarning)
    t_p = float(sp_stats.ttest_1samp(d, 0.0).pvalue)
  return PairedTest(n, mean, ci, t_p, wilcoxon_p, method, "")
