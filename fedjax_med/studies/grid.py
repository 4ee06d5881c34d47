"""A study's runs: expansion of its grids, run names, axis order and report checks.

Each run is the Cartesian product point of one grid times a seed; its name
``axis-label+...+seed-N`` is also its workdir under the sweep directory, and
its overrides are the study's ``fixed`` ones, then each axis label's in axis
order, then ``seed``. The union of the grids (deduplicated by run name) is the
study.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from collections.abc import Mapping

from fedjax_med.studies.specs import Study

_LABEL = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclasses.dataclass(frozen=True)
class Run:
  """One run of the grid.

  Attributes:
    name: ``axis-label+...+seed-N``, the run's workdir name.
    axes: axis -> label, including ``seed``.
    overrides: dotted config key -> value (fixed, then each axis in order, then seed).
  """

  name: str
  axes: dict
  overrides: dict


def run_name(axes: Mapping[str, str]) -> str:
  return "+".join(f"{k}-{v}" for k, v in axes.items())


def _check_labels(grid: Mapping) -> None:
  for axis, labels in grid.items():
    for label in labels:
      if not _LABEL.fullmatch(str(label)) or not _LABEL.fullmatch(axis):
        raise ValueError(f"axis {axis!r} label {label!r}: use letters, digits, '_', '.', '-'")


def expand(study: Study) -> list[Run]:
  """The study's runs in grid order; a run named twice (grids overlapping) appears once.

  Raises:
    ValueError: no seeds, an axis label that is not a safe path component, or the
      same run name with different overrides in two grids.
  """
  runs: dict[str, Run] = {}
  if not study.seeds:
    raise ValueError(f"study {study.name!r} has no seeds")
  for grid in study.grids:
    _check_labels(grid)
    axes = list(grid.items())
    for combo in itertools.product(*[list(labels.items()) for _, labels in axes]):
      for seed in study.seeds:
        names = {axis: label for (axis, _), (label, _) in zip(axes, combo, strict=True)}
        names["seed"] = str(seed)
        overrides = dict(study.fixed)
        for _, o in combo:
          overrides.update(o)
        overrides["seed"] = seed
        run = Run(run_name(names), names, overrides)
        if run.name in runs and runs[run.name].overrides != overrides:
          raise ValueError(f"run {run.name} appears in two grids with different overrides")
        runs[run.name] = run
  return list(runs.values())


def axis_order(study: Study) -> dict[str, list[str]]:
  """Labels of each axis in the order the study lists them (grids in order), then ``seed``."""
  order: dict[str, list[str]] = {}
  for grid in study.grids:
    for axis, labels in grid.items():
      order.setdefault(axis, [])
      order[axis] += [k for k in labels if k not in order[axis]]
  order["seed"] = [str(s) for s in study.seeds]
  return order


def check(study: Study) -> None:
  """Checks that every axis and label the report names is in the grid.

  Raises:
    ValueError: names the report field, the unknown axis or label, and the known ones.
  """
  order = axis_order(study)
  rep = study.report

  def need(where: str, axis: str, label: str | None = None) -> None:
    if axis not in order:
      raise ValueError(f"{where}: unknown axis {axis!r}; the study's axes are {list(order)}")
    if label is not None and label not in order[axis]:
      raise ValueError(f"{where}: axis {axis!r} has no label {label!r}; its labels are "
                       f"{order[axis]}")

  for axis in rep.table:
    need("report.table", axis)
  for axis in rep.matched.within if rep.matched else ():
    need("report.matched.within", axis)
  named = []
  if rep.target:
    named += [("report.target.reference", a, v) for a, v in rep.target.reference.items()]
  if rep.relative:
    named.append(("report.relative", rep.relative.axis, rep.relative.reference))
  if rep.baseline:
    named += [("report.baseline.where", a, v) for a, v in rep.baseline.where.items()]
  for p in rep.paired_specs() if rep.paired else ():
    named += [("report.paired.reference", a, v) for a, v in p.reference.items()]
    named += [("report.paired.where", a, v) for a, v in p.where.items()]
  for i, fig in enumerate(rep.figures):
    named += [(f"report.figures[{i}] ({type(fig).__name__})", a, v) for a, v in fig.labels()]
  for where, axis, label in named:
    need(where, axis, label)
