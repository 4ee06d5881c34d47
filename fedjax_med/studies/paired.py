"""Paired comparisons of table rows with a reference row, Holm-corrected per table.

For each table row (labels of the table axes) that is not a reference row, its
reference row has the :class:`~fedjax_med.studies.specs.Paired` reference labels on
the reference axes and the row's own labels on the other table axes. Its complete
runs are paired with the reference row's complete runs that have the same seed and
the same labels on every other non-reference axis; a run without a partner is left
out and counted (``unpaired``). Per metric, the differences (row - reference) of the
pairs where both runs have the metric are tested by :func:`stats.paired_test`
(``missing`` counts the pairs left out). The paired t-test p-values of all tested
comparisons of the table form one family for :func:`stats.holm`; a comparison is
significant when its Holm-adjusted p-value is <= ``Paired.alpha``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Mapping, Sequence

from fedjax_med.studies import stats, tables
from fedjax_med.studies.results import RunResult
from fedjax_med.studies.specs import Paired


@dataclasses.dataclass(frozen=True)
class Comparison:
  """One (table row, metric) against its reference row.

  Attributes:
    group: table axis -> label of the compared row.
    reference: table axis -> label of its reference row.
    metric: the metric.
    test: the paired differences' statistics (row - reference).
    unpaired: complete runs of either row without a partner (left out).
    missing: pairs left out because the metric is missing on one side.
    holm_p: the Holm-adjusted t-test p-value (None: not tested, see ``test.note``).
    significant: ``holm_p`` <= alpha.
  """

  group: dict
  reference: dict
  metric: str
  test: stats.PairedTest
  unpaired: int
  missing: int
  holm_p: float | None
  significant: bool


def metrics_of(spec: Paired, table_metrics: Sequence[str]) -> list[str]:
  """The compared metrics: ``spec.metrics``, else the table's without ``relative.*``."""
  if spec.metrics is not None:
    return list(spec.metrics)
  return [m for m in table_metrics if not m.startswith("relative.")]


def _pair_key(run: RunResult, reference_axes) -> tuple:
  """Seed and every other non-reference axis label: what a run and its partner share."""
  return tuple(sorted((a, v) for a, v in run.axes.items() if a not in reference_axes))


def pair(runs: Sequence[RunResult], refs: Sequence[RunResult],
         reference_axes) -> tuple[list[tuple[RunResult, RunResult]], int]:
  """Pairs complete runs with the complete reference runs that share their pair key.

  Returns:
    ``(pairs, unpaired)``: (run, reference run) pairs, in the order of ``runs``, and the
    number of complete runs of either side without a partner.
  """
  runs = [r for r in runs if r.complete]
  by_key = {_pair_key(r, reference_axes): r for r in refs if r.complete}
  pairs = [(r, by_key[k]) for r in runs if (k := _pair_key(r, reference_axes)) in by_key]
  return pairs, len(runs) + len(by_key) - 2 * len(pairs)


def _value(run: RunResult, metric: str) -> float | None:
  v = run.metrics.get(metric)
  return v if v is not None and math.isfinite(v) else None


def compare(results: Sequence[RunResult], by: Sequence[str], spec: Paired,
            metrics: Sequence[str],
            order: Mapping[str, Sequence[str]] | None = None) -> list[Comparison]:
  """Every non-reference table row against its reference row, for each metric.

  Args:
    results: the study's runs (incomplete ones are ignored).
    by: the table axes; must include the reference axes.
    spec: the reference and the Holm level.
    metrics: the compared metrics.
    order: axis -> labels, the row order (as :func:`tables.aggregate`).

  Returns:
    Comparisons in row order, then metric order, Holm-adjusted over the list.
  """
  missing_axes = set(spec.reference) - set(by)
  if missing_axes:
    raise ValueError(f"paired reference axes {sorted(missing_axes)} are not table axes {list(by)}")
  # ``where`` on a table axis picks the compared rows; on another axis, the runs of both sides.
  outside = {a: v for a, v in spec.where.items() if a not in by}
  results = [r for r in results if all(r.axes.get(a) == v for a, v in outside.items())]
  groups = tables.group(results, by, order)
  out = []
  for key, runs in groups.items():
    row = dict(zip(by, key, strict=True))
    if all(row[a] == v for a, v in spec.reference.items()):
      continue  # a reference row
    if any(row[a] != v for a, v in spec.where.items() if a in by):
      continue
    ref_row = {**row, **spec.reference}
    refs = groups.get(tuple(ref_row[a] for a in by), [])
    pairs, unpaired = pair(runs, refs, set(spec.reference))
    for m in metrics:
      values = [(_value(r, m), _value(q, m)) for r, q in pairs]
      diffs = [x - y for x, y in values if x is not None and y is not None]
      out.append(Comparison(row, ref_row, m, stats.paired_test(diffs), unpaired,
                            len(pairs) - len(diffs), None, False))
  tested = [i for i, c in enumerate(out) if c.test.t_p is not None]
  adjusted = stats.holm([out[i].test.t_p for i in tested])
  for i, p in zip(tested, adjusted, strict=True):
    out[i] = dataclasses.replace(out[i], holm_p=p, significant=p <= spec.alpha)
  return out


def verdict(c: Comparison, alpha: float) -> str:
  """``significant at <alpha> after Holm``, ``not significant`` or why there is no test."""
  if c.holm_p is None:
    return f"not significant (no test: {c.test.note})"
  return f"significant at {alpha:g} after Holm" if c.significant else "not significant"


def fmt_p(p: float | None) -> str:
  """A p-value to 2 significant digits, ``<0.0001`` below that, ``—`` for none."""
  if p is None:
    return "—"
  return "<0.0001" if p < 1e-4 else f"{p:.2g}"


def _difference(c: Comparison) -> str:
  mean, ci, n = c.test.mean, c.test.ci, c.test.n
  if n == 0:
    return "—"
  d = tables.DIGITS.get(c.metric, 3)
  return f"{mean:+.{d}f}" + (f" ± {ci:.{d}f}" if math.isfinite(ci) else "")


def _pairs(c: Comparison) -> str:
  left = [f"{k} {w}" for k, w in ((c.unpaired, "unpaired"), (c.missing, "missing")) if k]
  return f"{c.test.n}" + (f" ({', '.join(left)})" if left else "")


def to_markdown(comparisons: Sequence[Comparison], by: Sequence[str], alpha: float) -> str:
  """A Markdown table: row labels, metric, difference ± 95% CI, p-values, verdict, pairs."""
  head = [*by, "metric", "difference (row − ref)", "paired t p", "Wilcoxon p", "Holm p",
          "verdict", "pairs"]
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * (len(by) + 1) + "---:|" * 4 + "---|---:|"]
  for c in comparisons:
    w_cell = fmt_p(c.test.wilcoxon_p) + (
        " (approx.)" if c.test.wilcoxon_method == "normal approx." else "")
    cells = [str(c.group[a]) for a in by] + [
        tables.label(c.metric), _difference(c), fmt_p(c.test.t_p), w_cell, fmt_p(c.holm_p),
        verdict(c, alpha), _pairs(c)]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def to_csv(comparisons: Sequence[Comparison], by: Sequence[str]) -> str:
  """One CSV row per comparison (empty cells for missing values)."""
  out = io.StringIO()
  w = csv.writer(out)
  w.writerow([*by, *[f"reference.{a}" for a in by], "metric", "n_pairs", "unpaired_runs",
              "missing_values", "mean_diff", "ci95", "t_p", "wilcoxon_p", "wilcoxon_method",
              "holm_p", "significant", "note"])
  blank = lambda x: "" if x is None or (isinstance(x, float) and math.isnan(x)) else x  # noqa: E731
  for c in comparisons:
    t = c.test
    w.writerow([c.group[a] for a in by] + [c.reference[a] for a in by] + [
        c.metric, t.n, c.unpaired, c.missing, blank(t.mean), blank(t.ci), blank(t.t_p),
        blank(t.wilcoxon_p), t.wilcoxon_method, blank(c.holm_p), int(c.significant), t.note])
  return out.getvalue()


def summary(comparisons: Sequence[Comparison], alpha: float) -> str:
  """The report's sentence on the comparisons: it names only the significant ones."""
  tested = sum(c.holm_p is not None for c in comparisons)
  if not tested:
    return "No comparison could be tested (fewer than 2 pairs, or no differences)."
  sig = [c for c in comparisons if c.significant]
  if not sig:
    return (f"None of the {tested} tested differences from the reference is significant at "
            f"{alpha:g} after Holm's correction, so this report claims none of them: with "
            "these seeds they cannot be told apart from seed-to-seed variation.")
  items = "; ".join(
      f"{', '.join(f'{k}={v}' for k, v in c.group.items())}: {tables.label(c.metric)} "
      f"{_difference(c)} (Holm p {fmt_p(c.holm_p)})" for c in sig)
  return (f"Significant at {alpha:g} after Holm's correction ({len(sig)} of {tested} tested "
          f"differences): {items}. The others are not distinguishable from the reference "
          "with these seeds.")
