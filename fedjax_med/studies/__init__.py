"""Studies: grids of runs over config overrides, their runner and their report.

A study file (``configs/studies/<name>.py``) builds a typed :class:`Study`
(``specs``); ``grid`` expands it into runs; ``loader`` loads and checks a
``FILE:PRESET`` or packaged ``NAME:PRESET``; ``runner`` runs the grid resumably
(``fedjax-med-sweep``); ``results``, ``stats``, ``tables``, ``paired``, ``figures`` and ``document`` make the report
(``fedjax-med-report``).
"""

from fedjax_med.studies.grid import Run, expand
from fedjax_med.studies.loader import StudyError, load_checked, load_study
from fedjax_med.studies.specs import (
  BarFigure,
  Baseline,
  CurveFigure,
  HeatmapFigure,
  LineFigure,
  Matched,
  Paired,
  Post,
  Relative,
  ReportSpec,
  SiteWins,
  Study,
  Target,
)

__all__ = [
    "BarFigure",
    "Baseline",
    "CurveFigure",
    "HeatmapFigure",
    "LineFigure",
    "Matched",
    "Paired",
    "Post",
    "Relative",
    "ReportSpec",
    "Run",
    "SiteWins",
    "Study",
    "StudyError",
    "Target",
    "expand",
    "load_checked",
    "load_study",
]
