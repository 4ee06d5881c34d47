"""Typed study specs: a misspelled field, a wrong type or an axis the grid lacks fails clearly."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedjax_med.studies import grid, loader
from fedjax_med.studies.specs import (
  BarFigure,
  CurveFigure,
  HeatmapFigure,
  LineFigure,
  Relative,
  ReportSpec,
  Study,
  Target,
)

REPO = Path(__file__).resolve().parents[2]

STUDY_FILE = '''
from fedjax_med.studies.specs import CurveFigure, ReportSpec, Study


def get_study(preset="cpu"):
  return Study(name="typo", preset=preset, base="configs/quickstart.py",
               grids=({{"setting": {{"a": {{}}, "b": {{}}}}}},), seeds=(0,),
               report=ReportSpec({report}))
'''


def study_file(tmp_path, report: str) -> Path:
  path = tmp_path / "typo_study.py"
  path.write_text(STUDY_FILE.format(report=report))
  return path


def make_study(**report) -> Study:
  return Study(name="t", preset="cpu", base="configs/quickstart.py",
               grids=({"data": {"d1": {}, "d2": {}}, "setting": {"c": {}, "f": {}}},),
               seeds=(0,), report=ReportSpec(**report))


@pytest.mark.parametrize("report,word", [
    ('figures=(CurveFigure(x="round", colour="setting"),)', "colour"),
    ('table=("setting",), refrence={"setting": "a"}', "refrence"),
])
def test_misspelled_field_in_a_study_file_fails_clearly(tmp_path, report, word):
  path = study_file(tmp_path, report)
  with pytest.raises(loader.StudyError, match=f"unexpected keyword argument '{word}'"):
    loader.load_checked(f"{path}:cpu")
  res = subprocess.run([sys.executable, str(REPO / "launch" / "sweep.py"), f"--study={path}:cpu",
                        f"--workdir={tmp_path / 'sweep'}"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert res.returncode == 2 and "Traceback" not in res.stderr
  (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
  assert word in line and "typo_study.py" in line
  assert not (tmp_path / "sweep").exists()


def test_misspelled_axis_in_a_study_file_fails_clearly(tmp_path):
  path = study_file(tmp_path, 'figures=(CurveFigure(x="round", color="settings"),)')
  with pytest.raises(loader.StudyError, match=r"figures\[0\].*unknown axis 'settings'.*'setting'"):
    loader.load_checked(f"{path}:cpu")


@pytest.mark.parametrize("report,match", [
    ({"table": ("data", "algorithm")}, r"report.table: unknown axis 'algorithm'"),
    ({"target": Target(reference={"setting": "central"})},
     r"report.target.reference: axis 'setting' has no label 'central'"),
    ({"relative": Relative(axis="setting", reference="x")}, r"report.relative: .* label 'x'"),
    ({"figures": (BarFigure(x="setting", where={"data": "d3"}),)}, r"figures\[0\] \(BarFigure\)"),
    ({"figures": (LineFigure(x="setting", order=("c", "q")),)}, r"no label 'q'"),
    ({"figures": (HeatmapFigure(rows="data", cols="seting"),)}, r"unknown axis 'seting'"),
])
def test_check_names_the_report_field_and_the_unknown_axis_or_label(report, match):
  with pytest.raises(ValueError, match=match):
    grid.check(make_study(**report))


def test_check_accepts_every_axis_label_and_seed():
  grid.check(make_study(
      table=("data",), target=Target(reference={"setting": "c"}),
      relative=Relative(axis="setting", reference="c"),
      figures=(CurveFigure(x="bytes_up", color="setting", panel="data", where={"seed": "0"}),
               LineFigure(x="setting", order=("f", "c")),
               HeatmapFigure(rows="data", cols="setting", relative=True))))


@pytest.mark.parametrize("build,error,match", [
    (lambda: ReportSpec(figures=({"kind": "curves", "x": "round"},)), TypeError,
     r"figures\[0\] is a dict; use one of"),
    (lambda: ReportSpec(table="data"), TypeError, "sequence of names"),
    (lambda: ReportSpec(target={"setting": "c"}), TypeError, "must be a Target"),
    (lambda: CurveFigure(x="rounds", color="setting"), ValueError, "choose one of"),
    (lambda: Target(reference={"setting": "c"}, fraction=95), ValueError, "fraction"),
    (lambda: ReportSpec(figures=(HeatmapFigure(rows="a", cols="b", relative=True),)),
     ValueError, "needs ReportSpec"),
    (lambda: Study(name="t", preset="cpu", base="b", grids=({},), report={"table": []}),
     TypeError, "must be a ReportSpec"),
    (lambda: Study(name="t", preset="cpu", base="b", grids={"a": {}}), TypeError,
     "Study.grids"),
])
def test_specs_reject_wrong_types_and_values(build, error, match):
  with pytest.raises(error, match=match):
    build()


def test_sequences_become_tuples():
  spec = ReportSpec(table=["data"], metrics=["test.accuracy"],
                    figures=[BarFigure(x="setting", metrics=["test.auc"], order=["c"])])
  assert spec.table == ("data",) and spec.metrics == ("test.accuracy",)
  assert spec.figures[0].metrics == ("test.auc",) and spec.figures[0].order == ("c",)
  assert isinstance(spec.figures, tuple)
