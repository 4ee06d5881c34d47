"""Typed study definitions: the grid (:class:`Study`), post steps and the report spec.

A study file (``configs/studies/<name>.py``) has ``get_study(preset) -> Study``.
A :class:`Study` names a base config and one or more *grids*; each grid is an
ordered mapping ``axis -> {label: overrides}`` whose Cartesian product (times
``seeds``) gives the runs (``fedjax_med/studies/grid.py``). Its :class:`ReportSpec`
says what the report (``fedjax-med-report``) tabulates and plots. Every spec is a
frozen dataclass, so a misspelled field fails when the study file is loaded,
and :func:`fedjax_med.studies.grid.check` then rejects axes and labels that the
grid does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

Overrides = Mapping[str, Any]  # dotted config key -> value
Grid = Mapping[str, Mapping[str, Overrides]]  # axis -> label -> overrides
AxisLabels = tuple[tuple[str, str | None], ...]  # (axis, label or None = any label)

# Test metrics of the validation-selected evaluation, the worst site on its own held-out
# share, and cost (fedjax_med/train.py: summary.json "selected", "sites").
DEFAULT_METRICS = ("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc",
                   "sites.balanced_accuracy.worst", "target.round", "total_mb_up", "wall_time_s")
# x of a CurveFigure -> axis title; bytes are plotted in MB.
CURVE_X = {"round": "round", "elapsed_s": "wall time (s)", "bytes_up": "MB uploaded"}


def _as_tuple(spec, name: str) -> None:
  """Stores field ``name`` of a frozen spec as a tuple; a bare string is an error."""
  value = getattr(spec, name)
  if value is None:
    return
  if isinstance(value, (str, Mapping)) or not hasattr(value, "__iter__"):
    raise TypeError(f"{type(spec).__name__}.{name} must be a sequence of names, got {value!r}")
  object.__setattr__(spec, name, tuple(value))


def _where(where: Mapping[str, str]) -> AxisLabels:
  return tuple(where.items())


@dataclasses.dataclass(frozen=True)
class Post:
  """A command run once after the grid: ``argv`` (what to run, then its flags).

  ``argv[0]`` is an entry point (``analysis/landscape.py``, ``fedjax-med-landscape``
  or ``fedjax_med.cli.landscape``: run as ``python -m fedjax_med.cli.landscape``),
  another ``.py`` script, or a module name (``fedjax_med/cli/commands.py``).

  ``{sweep}`` in ``argv`` and ``output`` is the sweep directory; ``output`` is the
  file whose existence marks the step as done. ``needs`` lists the run names it reads.
  The report shows the landscape plots and table of a step that wrote them
  (``analysis/landscape.py``).
  """

  name: str
  argv: tuple[str, ...]
  output: str
  needs: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class CurveFigure:
  """Seed-mean test accuracy (95% CI band) against ``x``, one line per ``color`` label.

  Attributes:
    x: ``round``, ``elapsed_s`` or ``bytes_up`` (plotted in MB).
    color: axis whose labels are the lines.
    panel: axis whose labels are the panels (None: one panel).
    where: only runs with these axis labels.
    logx: logarithmic x axis.
  """

  kind: ClassVar[str] = "curves"
  x: str
  color: str
  panel: str | None = None
  where: Mapping[str, str] = dataclasses.field(default_factory=dict)
  logx: bool = False

  def __post_init__(self):
    if self.x not in CURVE_X:
      raise ValueError(f"CurveFigure.x={self.x!r}: choose one of {list(CURVE_X)}")

  def labels(self) -> AxisLabels:
    return ((self.color, None),) + (((self.panel, None),) if self.panel else ()) + _where(
        self.where)


@dataclasses.dataclass(frozen=True)
class _MetricFigure:
  """Seed-mean ``metrics`` (95% CI) per label of axis ``x``, one group per ``color`` label.

  Attributes:
    x: axis whose labels are the x positions.
    color: axis whose labels are the groups (None: one group per metric).
    metrics: one panel each.
    where: only runs with these axis labels.
    order: the x labels to show, in this order (None: every label, in study order).
  """

  x: str
  color: str | None = None
  metrics: tuple[str, ...] = ("test.accuracy",)
  where: Mapping[str, str] = dataclasses.field(default_factory=dict)
  order: tuple[str, ...] | None = None

  def __post_init__(self):
    _as_tuple(self, "metrics")
    _as_tuple(self, "order")

  def labels(self) -> AxisLabels:
    xs = tuple((self.x, label) for label in self.order or (None,))
    return xs + (((self.color, None),) if self.color else ()) + _where(self.where)


@dataclasses.dataclass(frozen=True)
class BarFigure(_MetricFigure):
  """Grouped bars; see :class:`_MetricFigure` for the fields."""

  kind: ClassVar[str] = "bars"


@dataclasses.dataclass(frozen=True)
class LineFigure(_MetricFigure):
  """Lines over the (categorical) labels of ``x``; see :class:`_MetricFigure` for the fields."""

  kind: ClassVar[str] = "vs_axis"


@dataclasses.dataclass(frozen=True)
class HeatmapFigure:
  """Seed-mean ``metric`` per (``rows`` label, ``cols`` label).

  ``relative=True`` plots ``relative.accuracy`` (needs ``ReportSpec.relative``)
  and leaves out the reference column.
  """

  kind: ClassVar[str] = "heatmap"
  rows: str
  cols: str
  metric: str = "test.accuracy"
  relative: bool = False
  where: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def labels(self) -> AxisLabels:
    return ((self.rows, None), (self.cols, None)) + _where(self.where)


Figure = CurveFigure | BarFigure | LineFigure | HeatmapFigure
FIGURES = (CurveFigure, BarFigure, LineFigure, HeatmapFigure)


@dataclasses.dataclass(frozen=True)
class Target:
  """Targets at ``fraction`` x the mean final test accuracy of the ``reference`` runs.

  ``reference`` maps axes to labels; a run is compared with the reference runs
  that share its other (non-seed) axis labels. Fills the ``target.*`` metrics.
  """

  reference: Mapping[str, str]
  fraction: float = 0.95

  def __post_init__(self):
    if not 0 < self.fraction <= 1:
      raise ValueError(f"Target.fraction must be in (0, 1], got {self.fraction}")


@dataclasses.dataclass(frozen=True)
class Relative:
  """``relative.accuracy`` / ``relative.drop`` against the same-seed run with ``axis=reference``."""

  axis: str
  reference: str


@dataclasses.dataclass(frozen=True)
class SiteWins:
  """Site by site against the same-seed run with ``axis=reference`` (paired by seed and the
  other axes): ``<field>_vs_<reference>.wins`` / ``.losses`` (sites whose held-out
  ``metric`` is higher / lower in this run than in the reference run's ``sites``),
  ``.compared`` (sites where both are defined) and ``.gain`` (the mean per-site
  difference). ``field``: which per-site block of this run (``sites``: each site's
  model, ``sites_global``, ``sites_finetuned``); the reference is always its ``sites``
  (the model its sites would use). Sites never sampled in either run are left out.
  """

  axis: str
  reference: str
  metric: str = "balanced_accuracy"
  field: str = "sites"

  @property
  def prefix(self) -> str:
    return f"{self.field}_vs_{self.reference}"


@dataclasses.dataclass(frozen=True)
class Paired:
  """Paired comparisons of every table row with its reference row (``fedjax_med/studies/paired.py``).

  A table row is compared with the row that has the ``reference`` labels on the
  reference axes and the same labels on the other table axes (the comparison
  stays within the groups those other axes form). Runs are paired by seed and by
  every other non-reference axis label; a run with no partner is left out and counted.

  Attributes:
    reference: axis -> label of the reference runs; the axes must be table axes.
    where: only compare table rows with these labels (empty: every row).
    metrics: the metrics compared (None: the table's, without ``relative.*``, which
      are already relative to a same-seed reference).
    alpha: the family-wise error rate of the Holm correction over the table's comparisons.
  """

  reference: Mapping[str, str]
  where: Mapping[str, str] = dataclasses.field(default_factory=dict)
  metrics: tuple[str, ...] | None = None
  alpha: float = 0.05

  def __post_init__(self):
    _as_tuple(self, "metrics")
    if not self.reference:
      raise ValueError("Paired.reference must name at least one axis and its reference label")
    if not 0 < self.alpha < 1:
      raise ValueError(f"Paired.alpha must be in (0, 1), got {self.alpha}")


@dataclasses.dataclass(frozen=True)
class Matched:
  """Sharpness compared at a matched training loss (``matched.*`` metrics).

  Sharpness falls as a model fits its data, so comparing the last records of runs
  that reached different training losses confounds the two. Runs with the same
  labels on the ``within`` axes form a group; the group's level is the highest of
  its complete runs' lowest ``analysis.<loss>`` (the loss every run reached); each
  run's ``matched.*`` are the fields of its first analysis record at or below that
  level (``matched.round`` when, ``matched.level`` the level). Runs need several
  analysis records (``analysis.every`` < ``fl.rounds``).
  """

  within: tuple[str, ...] = ()
  loss: str = "loss"

  def __post_init__(self):
    _as_tuple(self, "within")


@dataclasses.dataclass(frozen=True)
class Baseline:
  """A published result to compare the table row picked by ``where`` with."""

  where: Mapping[str, str]
  accuracy: float
  auc: float
  source: str


@dataclasses.dataclass(frozen=True)
class ReportSpec:
  """What the study report tabulates and plots.

  Attributes:
    table: the axes that group the table rows (empty: every non-seed axis, in study order).
    metrics: table columns (flat metric names, ``fedjax_med/studies/results.py``).
    target: fills ``target.*`` (rounds, time, MB to a fraction of a reference accuracy).
    relative: adds ``relative.accuracy`` and ``relative.drop`` columns.
    baseline: a published number to compare with.
    matched: adds ``matched.*`` sharpness at a matched training loss (:class:`Matched`).
    site_wins: adds ``<field>_vs_<reference>.*``: per-site wins against a reference
      run (:class:`SiteWins`), one set per entry.
    paired: the reference of the paired comparisons under the table, or a tuple of
      them (one family each, e.g. the alpha axis against IID and the algorithms
      against FedAvg at one alpha; Holm corrects within a family). None: the
      ``target`` reference, else the ``relative`` reference, else no comparisons;
      see :meth:`paired_specs`.
    figures: the plots, in order.
  """

  table: tuple[str, ...] = ()
  metrics: tuple[str, ...] = DEFAULT_METRICS
  target: Target | None = None
  relative: Relative | None = None
  baseline: Baseline | None = None
  paired: Paired | tuple[Paired, ...] | None = None
  matched: Matched | None = None
  site_wins: tuple[SiteWins, ...] = ()
  figures: tuple[Figure, ...] = ()

  def __post_init__(self):
    for name in ("table", "metrics", "figures", "site_wins"):
      _as_tuple(self, name)
    for w in self.site_wins:
      if not isinstance(w, SiteWins):
        raise TypeError(f"ReportSpec.site_wins must hold SiteWins, got {w!r}")
    for i, fig in enumerate(self.figures):
      if not isinstance(fig, FIGURES):
        raise TypeError(f"ReportSpec.figures[{i}] is a {type(fig).__name__}; use one of "
                        f"{[f.__name__ for f in FIGURES]}")
      if isinstance(fig, HeatmapFigure) and fig.relative and self.relative is None:
        raise ValueError(f"ReportSpec.figures[{i}]: HeatmapFigure(relative=True) needs "
                         "ReportSpec(relative=Relative(...))")
    if isinstance(self.paired, list):
      object.__setattr__(self, "paired", tuple(self.paired))
    for name, cls in (("target", Target), ("relative", Relative), ("baseline", Baseline),
                      ("matched", Matched)):
      value = getattr(self, name)
      if value is not None and not isinstance(value, cls):
        raise TypeError(f"ReportSpec.{name} must be a {cls.__name__}, got {value!r}")
    families = self.paired if isinstance(self.paired, tuple) else (
        () if self.paired is None else (self.paired,))
    for p in families:
      if not isinstance(p, Paired):
        raise TypeError(f"ReportSpec.paired must be a Paired or a tuple of them, got {p!r}")
      if not self._tabulated(p.reference):
        raise ValueError(f"ReportSpec.paired: the reference axes {sorted(p.reference)} "
                         f"must be table axes {list(self.table)}")

  def _tabulated(self, axes) -> bool:
    return not self.table or set(axes) <= set(self.table)

  def paired_specs(self) -> tuple[Paired, ...]:
    """The paired comparisons' families: ``paired``, else one built from the reference
    the study already names (``target.reference``, else ``relative``) when its axes
    are table axes, else none."""
    if isinstance(self.paired, tuple):
      return self.paired
    if self.paired is not None:
      return (self.paired,)
    named = ([dict(self.target.reference)] if self.target else []) + (
        [{self.relative.axis: self.relative.reference}] if self.relative else [])
    return next(((Paired(reference=ref),) for ref in named if self._tabulated(ref)), ())


@dataclasses.dataclass(frozen=True)
class Study:
  """A grid of runs and how to report it.

  Attributes:
    name: the study's name (report ``docs/results/<name>.md``).
    preset: the preset it was built for (``cpu``, ``full``).
    base: ``--config`` of every run, e.g. ``configs/quickstart.py`` (the packaged file
      when no such file exists: ``fedjax_med/config_files.py``).
    grids: each an ordered ``axis -> {label: overrides}``; the study is their union.
    seeds: every grid point runs once per seed (the ``seed`` axis).
    fixed: overrides for every run (an axis label's overrides beat them).
    post: commands run after the grid.
    report: what the report shows.
    description: the study docstring (the report's "What was run").
  """

  name: str
  preset: str
  base: str
  grids: tuple[Grid, ...]
  seeds: tuple[int, ...] = (0, 1, 2)
  fixed: Overrides = dataclasses.field(default_factory=dict)
  post: tuple[Post, ...] = ()
  report: ReportSpec = dataclasses.field(default_factory=ReportSpec)
  description: str = ""

  def __post_init__(self):
    for name in ("grids", "seeds", "post"):
      _as_tuple(self, name)
    if not isinstance(self.report, ReportSpec):
      raise TypeError(f"Study.report must be a ReportSpec, got {type(self.report).__name__}")
