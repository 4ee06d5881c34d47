"""Installing without a clone: packaged configs, console-script modules, a wheel, report files."""

import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from fedjax_med import config_files
from fedjax_med.cli import commands
from fedjax_med.cli import report as report_cli
from fedjax_med.cli import sweep as sweep_cli
from fedjax_med.cli import train as train_cli

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- packaged names


def test_packaged_names_resolve_to_the_shipped_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # outside the clone: no configs/ here
  folder = Path(config_files.configs_dir())
  assert config_files.resolve("quickstart") == str(folder / "quickstart.py")
  assert config_files.resolve("comm:topk_ef") == f"{folder / 'comm.py'}:topk_ef"
  # the documented paths (and the studies' base) name the packaged file outside a clone
  assert config_files.resolve("configs/quickstart.py") == str(folder / "quickstart.py")
  hetero = f"{folder / 'studies' / 'heterogeneity.py'}:cpu"
  for spec in ("heterogeneity:cpu", "studies/heterogeneity:cpu",
               "configs/studies/heterogeneity.py:cpu"):
    assert config_files.resolve(spec, "study") == hetero
  assert "common" not in config_files.packaged("study")  # no get_study
  assert {"quickstart", "base", "comm"} <= set(config_files.packaged("config"))


def test_an_existing_path_wins(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "quickstart").write_text("def get_config():\n  return None\n")
  assert config_files.resolve("quickstart") == "quickstart"


def test_unknown_config_exits_2_naming_the_packaged_ones(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    train_cli.main(["--config=nope", f"--workdir={tmp_path / 'run'}"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert err.startswith("error: config 'nope'") and "quickstart, quickstart_centralized" in err
  assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_unknown_study_exits_2_naming_the_packaged_ones(tmp_path, capsys):
  assert sweep_cli.main(["--study=nope:cpu", f"--workdir={tmp_path / 's'}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error:") and "heterogeneity" in err and "communication" in err
  assert report_cli.main(["--study=nope:cpu", f"--workdir={tmp_path}"]) == 2
  assert not (tmp_path / "s").exists()


# ----------------------------------------------------------------------------- entry points


def test_console_scripts_match_the_entry_point_modules():
  tomllib = pytest.importorskip("tomllib")
  project = tomllib.loads((REPO / "pyproject.toml").read_text())
  scripts = project["project"]["scripts"]
  assert scripts == {e.script: f"{e.module}:main" for e in commands.ENTRY_POINTS}
  for e in commands.ENTRY_POINTS:
    assert callable(importlib.import_module(e.module).main)
    assert (REPO / e.path).is_file()  # the clone's shim


def test_every_subpackage_is_in_the_wheel_list():
  tomllib = pytest.importorskip("tomllib")
  setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
  def packages(root: Path, name: str) -> set[str]:
    return {".".join([name, *p.parent.relative_to(root).parts]) for p in root.rglob("__init__.py")
            if "__pycache__" not in p.parts}

  found = packages(REPO / "fedjax_med", "fedjax_med") | packages(REPO / "configs",
                                                                 "fedjax_med.configs")
  assert set(setup["packages"]) == found
  assert setup["package-dir"] == {"fedjax_med.configs": "configs"}


@pytest.mark.parametrize("module", [e.module for e in commands.ENTRY_POINTS
                                    if e.module != "fedjax_med.cli.train"])
def test_entry_point_main_takes_argv(module, capsys):
  with pytest.raises(SystemExit) as e:
    importlib.import_module(module).main(["--help"])
  assert e.value.code == 0 and "--" in capsys.readouterr().out


def test_train_main_takes_argv(capsys):
  with pytest.raises(SystemExit):  # absl's --help exits 1
    train_cli.main(["--help"])
  out = capsys.readouterr().out
  assert "--workdir" in out and "--config" in out


def test_python_m_argv_of_entry_points_and_scripts():
  assert commands.python_argv("analysis/landscape.py") == [
      sys.executable, "-m", "fedjax_med.cli.landscape"]
  assert commands.python_argv("fedjax-med-train")[1:] == ["-m", "fedjax_med.cli.train"]
  assert commands.python_argv("/x/post.py") == [sys.executable, "/x/post.py"]
  mod = "fedjax_med.cli.sweep"
  assert commands.invocation(["/venv/bin/fedjax-med-sweep", "--jobs=2"], mod) == [
      "fedjax-med-sweep", "--jobs=2"]
  assert commands.invocation(["launch/sweep.py", "--jobs=2"], mod) == [
      "python", "launch/sweep.py", "--jobs=2"]
  assert commands.invocation([str(REPO / "fedjax_med/cli/sweep.py"), "-x"], mod) == [
      "python", "-m", mod, "-x"]


# ----------------------------------------------------------------------------- the report


STUDY = '''
from tests.studies.study_report_test import make_study


def get_study(preset="cpu"):
  return make_study()
'''


def test_report_goes_beside_the_sweep_and_shows_the_recorded_commands(tmp_path, monkeypatch):
  from tests.studies.study_report_test import make_study, write_runs

  monkeypatch.chdir(tmp_path)
  (tmp_path / "toy_study.py").write_text(STUDY)
  write_runs(tmp_path / "sweep", make_study())
  committed = {p: p.stat().st_mtime_ns for p in (REPO / "docs" / "results").glob("*.md")}
  # every selected run is complete: the sweep only records itself in sweep.json
  argv = ["--study=toy_study.py:cpu", "--workdir=sweep", "--jobs=3", "--only=seed-[01]",
          "--override=fl.rounds=1"]
  assert sweep_cli.main(argv) == 0
  manifest = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
  (entry,) = manifest["invocations"]
  assert entry["command"] == "python -m fedjax_med.cli.sweep " + " ".join(
      a if "[" not in a else f"'{a}'" for a in argv)
  assert entry["cwd"] == str(tmp_path)
  assert sweep_cli.main(argv) == 0  # the same command again is recorded once
  assert len(json.loads((tmp_path / "sweep" / "sweep.json").read_text())["invocations"]) == 1
  assert report_cli.main(["--study=toy_study.py:cpu", "--workdir=sweep"]) == 0
  page = tmp_path / "sweep" / "report" / "toy.md"
  text = page.read_text()
  assert entry["command"] in text
  assert "python -m fedjax_med.cli.report --study=toy_study.py:cpu --workdir=sweep" in text
  assert (tmp_path / "sweep" / "report" / "toy.csv").exists()
  assert {p: p.stat().st_mtime_ns for p in committed} == committed  # docs/results untouched
  assert report_cli.main(["--study=toy_study.py:cpu", "--workdir=sweep", "--output=out"]) == 0
  assert (tmp_path / "out" / "toy.md").exists() and (tmp_path / "out" / "toy.csv").exists()


# ----------------------------------------------------------------------------- a real install


def _can_build_wheels() -> bool:
  import setuptools

  major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
  return importlib.util.find_spec("wheel") is not None or (major, minor) >= (70, 1)


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="venv layout of POSIX")
def test_wheel_installs_and_runs_outside_the_clone(tmp_path):
  """``pip install`` of a wheel (no deps, no download) into a venv; commands from elsewhere."""
  if not _can_build_wheels():
    pytest.skip("building a wheel offline needs the `wheel` package or setuptools >= 70.1")
  dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
  work.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  run = lambda *a, **kw: subprocess.run([str(x) for x in a], capture_output=True, text=True,  # noqa: E731
                                        env=env, timeout=600, **kw)
  src = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(REPO / name, src / name)
  for name in ("fedjax_med", "configs"):
    shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
  res = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
            "-w", dist, src)
  assert res.returncode == 0, res.stderr[-3000:]
  (wheel,) = dist.glob("fedjax_med-*.whl")
  assert run(sys.executable, "-m", "venv", "--system-site-packages", venv).returncode == 0
  res = run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "-q", wheel)
  assert res.returncode == 0, res.stderr[-3000:]
  res = run(venv / "bin" / "python", "-c",
            "import fedjax_med.configs as c, fedjax_med.configs.studies.common; print(c.__file__)",
            cwd=work)
  assert res.returncode == 0 and str(venv) in res.stdout, res.stderr[-3000:]
  res = run(venv / "bin" / "fedjax-med-train", "--help", cwd=work)
  assert "--workdir" in res.stdout, res.stderr[-3000:]
  # the packaged config loads (with its imports): a typo in a key is reported, exit 2
  res = run(venv / "bin" / "fedjax-med-train", "--config=quickstart", "--workdir=run",
            "--config.fl.clent_lr=1", cwd=work)
  assert res.returncode == 2 and "client_lr" in res.stderr, res.stderr[-3000:]
  res = run(venv / "bin" / "fedjax-med-sweep", "--study=heterogeneity:cpu", "--dry_run",
            "--workdir=sweep", cwd=work)
  assert res.returncode == 0, res.stderr[-3000:]
  cmds = [line for line in res.stdout.splitlines() if line.startswith("$ ")]
  assert cmds and all(c.startswith("$ python -m fedjax_med.cli.train --config=configs/quickstart.py "
                                   "--workdir=sweep/") for c in cmds)
  assert not (work / "sweep" / "sweep.json").exists()


def test_every_extra_is_used_by_the_code():
  """Nothing advertised that does not run: each extra's packages are imported by the project."""
  extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
      "optional-dependencies"]
  sources = "\n".join(p.read_text() for folder in ("fedjax_med", "analysis")
                      for p in (REPO / folder).rglob("*.py"))
  for extra, requirements in extras.items():
    if extra == "dev":
      continue
    for requirement in requirements:
      module = re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].replace("-", "_")
      assert re.search(rf"^\s*(import|from) {module}\b", sources, re.M), (extra, module)
