"""Study grids (fedjax_med/studies/) and ``launch/sweep.py --study=FILE:PRESET``.

The end-to-end tests run a 2-run grid of tiny synthetic runs once (module
fixture, through the CLI as a user runs it) and check skipping, resuming,
failures, post steps and dry runs on copies of that sweep directory.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from configs import base, quickstart
from fedjax_med import config as config_lib
from fedjax_med.data import synthetic
from fedjax_med.studies import grid, loader, runner
from fedjax_med.studies.specs import Post, Study

REPO = Path(__file__).resolve().parents[2]
RUN_IID = "partition-iid+seed-0"
RUN_A1 = "partition-a1+seed-0"

STUDY_FILE = '''
from fedjax_med.studies.specs import Study

TINY = {{
    "data.root": {root!r}, "data.verify_md5": False, "data.download": False,
    "model.name": "cnn_tiny", "fl.rounds": 1, "fl.local_steps": 1, "fl.num_clients": 2,
    "fl.clients_per_round": 2, "fl.batch_size": 8, "eval.every": 1, "ckpt.every": 1,
    "partition.min_size": 2,
}}


def get_study(preset="cpu"):
  if preset == "cpu":
    grids = ({{"partition": {{"iid": {{"partition.kind": "iid"}},
                            "a1": {{"partition.kind": "dirichlet", "partition.alpha": 1.0}}}}}},)
  elif preset == "fail":  # fl.client_lr=-1 is a config error: launch/main.py exits 2
    grids = ({{"lr": {{"bad": {{"fl.client_lr": -1}}, "ok": {{}}}}}},)
  else:
    raise ValueError(f"unknown preset {{preset!r}}")
  return Study(name="tiny", preset=preset, base="configs/quickstart.py", grids=grids,
               seeds=(0,), fixed=TINY)
'''


def run_cli(*args, cwd=REPO):
  return subprocess.run([sys.executable, str(REPO / "launch" / "sweep.py"), *map(str, args)],
                        capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def study_file(tmp_path_factory):
  d = tmp_path_factory.mktemp("study")
  synthetic.write_npz(d / "data" / "pneumoniamnist.npz", name="pneumoniamnist", n_train=60,
                      n_val=20, n_test=20)
  path = d / "tiny_study.py"
  path.write_text(STUDY_FILE.format(root=str(d / "data")))
  return path


@pytest.fixture(scope="module")
def done_sweep(study_file, tmp_path_factory):
  """The 2-run grid run once through the CLI: (sweep dir, CompletedProcess)."""
  sweep_dir = tmp_path_factory.mktemp("done") / "sweep"
  res = run_cli(f"--study={study_file}:cpu", f"--workdir={sweep_dir}")
  return sweep_dir, res


@pytest.fixture(scope="module")
def complete_sweep(study_file, tmp_path_factory):
  """The same grid as ``done_sweep`` as the runner sees it once complete (a ``summary.json``
  in each run's workdir, ``runner.is_complete``), without training: for the skip and post-step
  tests (the real runs are checked by the slow ``test_cli_runs_the_grid``)."""
  sweep_dir = tmp_path_factory.mktemp("complete") / "sweep"
  for name in (RUN_IID, RUN_A1):
    (sweep_dir / name).mkdir(parents=True)
    (sweep_dir / name / "summary.json").write_text('{"rounds_completed": 1}\n')
  return sweep_dir, subprocess.CompletedProcess([], 0, "", "")


def copy_sweep(done_sweep, tmp_path) -> Path:
  src, res = done_sweep
  assert res.returncode == 0, res.stderr[-3000:]
  dst = tmp_path / "sweep"
  shutil.copytree(src, dst)
  return dst


def statuses(sweep_dir: Path) -> dict:
  manifest = json.loads((sweep_dir / "sweep.json").read_text())
  return {r["name"]: r["status"] for r in manifest["runs"] + manifest["post"]}


# ----------------------------------------------------------------------------- expand


def make_study(grids, seeds=(0, 1), fixed=None, **kw):
  return Study(name="t", preset="cpu", base="configs/quickstart.py", grids=grids, seeds=seeds,
               fixed=fixed or {}, **kw)


def test_expand_is_the_product_of_axes_and_seeds_in_order():
  study = make_study(
      ({"data": {"p": {"data.name": "pneumoniamnist"}, "b": {"data.name": "breastmnist"}},
        "alg": {"avg": {"algorithm.name": "fedavg", "fl.rounds": 3},
                "prox": {"algorithm.name": "fedprox"}, "lr.5": {"fl.client_lr": 0.5}}},),
      seeds=(0, 7), fixed={"fl.rounds": 9, "seed": 99, "eval.every": 1})
  runs = grid.expand(study)
  assert len(runs) == 2 * 3 * 2
  assert [r.name for r in runs[:4]] == ["data-p+alg-avg+seed-0", "data-p+alg-avg+seed-7",
                                        "data-p+alg-prox+seed-0", "data-p+alg-prox+seed-7"]
  assert runs[-1].name == "data-b+alg-lr.5+seed-7"
  assert len({r.name for r in runs}) == len(runs)
  first = runs[0]
  assert first.axes == {"data": "p", "alg": "avg", "seed": "0"}
  # fixed, then the axes (an axis beats fixed), then the seed (beats both)
  assert first.overrides == {"fl.rounds": 3, "seed": 0, "eval.every": 1,
                             "data.name": "pneumoniamnist", "algorithm.name": "fedavg"}
  prox = runs[3]
  assert prox.overrides["fl.rounds"] == 9 and prox.overrides["seed"] == 7
  assert prox.overrides["algorithm.name"] == "fedprox"
  assert runs[-1].overrides["fl.client_lr"] == 0.5 and runs[-1].overrides["data.name"] == "breastmnist"


def test_expand_later_axis_overrides_earlier_one():
  study = make_study(({"a": {"x": {"fl.rounds": 1}}, "b": {"y": {"fl.rounds": 2}}},), seeds=(0,))
  (run,) = grid.expand(study)
  assert run.name == "a-x+b-y+seed-0" and run.overrides == {"fl.rounds": 2, "seed": 0}


def test_expand_unions_grids_and_deduplicates():
  shared = {"iid": {"partition.kind": "iid"}}
  g1 = {"partition": {**shared, "a1": {"partition.kind": "dirichlet", "partition.alpha": 1.0}}}
  g2 = {"partition": {**shared, "q": {"partition.kind": "quantity"}}}
  runs = grid.expand(make_study((g1, g2)))
  assert [r.name for r in runs] == [
      "partition-iid+seed-0", "partition-iid+seed-1", "partition-a1+seed-0",
      "partition-a1+seed-1", "partition-q+seed-0", "partition-q+seed-1"]


def test_expand_same_name_with_different_overrides_raises():
  g1 = {"partition": {"iid": {"partition.kind": "iid"}}}
  g2 = {"partition": {"iid": {"partition.kind": "iid", "partition.site_shift": 1.0}}}
  with pytest.raises(ValueError, match="different overrides"):
    grid.expand(make_study((g1, g2)))


@pytest.mark.parametrize("label", ["a/b", "a b", "", "a+b", "../x"])
def test_expand_rejects_unsafe_labels(label):
  with pytest.raises(ValueError, match="label"):
    grid.expand(make_study(({"partition": {label: {"partition.kind": "iid"}}},)))


def test_expand_rejects_unsafe_axis_names():
  with pytest.raises(ValueError):
    grid.expand(make_study(({"part ition": {"iid": {"partition.kind": "iid"}}},)))


def test_expand_without_seeds_raises():
  with pytest.raises(ValueError, match="no seeds"):
    grid.expand(make_study(({"partition": {"iid": {}}},), seeds=()))


def test_command_puts_extra_overrides_last():
  study = make_study(({"partition": {"iid": {"partition.kind": "iid"}}},), seeds=(3,),
                     fixed={"fl.rounds": 5})
  (run,) = grid.expand(study)
  argv = runner.command(study, run, "/tmp/sw", extra={"fl.rounds": "1", "eval.every": "1"})
  assert argv[:4] == [sys.executable, "-m", "fedjax_med.cli.train",
                      "--config=configs/quickstart.py"]
  assert "--workdir=/tmp/sw/partition-iid+seed-3" in argv
  flags = [a for a in argv if a.startswith("--config.") and a != "--config.log.progress=lines"]
  assert flags == ["--config.fl.rounds=1", "--config.partition.kind=iid", "--config.seed=3",
                   "--config.eval.every=1"]


def test_relative_sweep_dir_means_the_same_directory_to_parent_and_children(tmp_path,
                                                                            monkeypatch):
  """Children run in the parent's directory: the recorded --workdir is relative to it."""
  study = make_study(({"partition": {"iid": {"partition.kind": "iid"}}},), seeds=(0,))
  monkeypatch.chdir(tmp_path)
  lines = []
  runner.run_all(study, "rel", dry_run=True, log=lines.append)
  (cmd,) = [line for line in lines if line.startswith("$ ")]
  (workdir,) = [a.split("=", 1)[1] for a in cmd.split() if a.startswith("--workdir=")]
  # what the child (same cwd) writes vs where the parent looks for summary.json
  assert os.path.join(os.getcwd(), workdir) == str(tmp_path / "rel" / "partition-iid+seed-0")


# ----------------------------------------------------------------------------- study files


def test_load_study_from_a_file_and_preset(study_file):
  study = loader.load_study(f"{study_file}:cpu")
  assert study.name == "tiny" and study.preset == "cpu" and study.seeds == (0,)
  runs = grid.expand(study)
  assert [r.name for r in runs] == [RUN_IID, RUN_A1]
  assert runs[1].overrides["partition.alpha"] == 1.0
  assert runs[0].overrides["model.name"] == "cnn_tiny"
  with pytest.raises(ValueError, match="unknown preset"):
    loader.load_study(f"{study_file}:nope")
  with pytest.raises(FileNotFoundError):
    loader.load_study(f"{study_file.parent / 'missing.py'}:cpu")


STUDIES = ("centralized_vs_federated", "heterogeneity", "architectures",
           "implicit_regularization", "communication", "privacy", "robustness", "personalization")
# One-axis studies over the presets of one config file (configs/comm.py, ...): cpu only.
PRESET_STUDIES = ("comm_presets", "local_step_presets", "algorithm_presets")


def config_has_key(config, dotted: str) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node:
      return False
    node = node[part]
  return not hasattr(node, "keys")  # a leaf, not a whole sub-config


@pytest.mark.parametrize("name,preset", [(n, p) for n in STUDIES for p in ("cpu", "full")] +
                         [(n, "cpu") for n in PRESET_STUDIES])
def test_real_studies_load_and_expand(name, preset):
  study = loader.load_checked(f"{REPO / 'configs' / 'studies' / name}.py:{preset}")
  assert study.preset == preset
  runs = grid.expand(study)
  assert runs
  config = base.get_config()
  for r in runs:
    assert "seed" in r.overrides and r.overrides["seed"] == int(r.axes["seed"])
    bad = [k for k in r.overrides if not config_has_key(config, k)]
    assert not bad, f"{name}:{preset} run {r.name}: unknown config keys {bad}"
  for r in runs[:: max(1, len(runs) // 60)]:  # every value valid, not only every key known
    config_lib.validate(config_lib.resolve(base.apply(quickstart.get_config(), r.overrides)))
  if preset == "cpu" and name in STUDIES:
    assert len(study.seeds) >= 5  # the evidence protocol
    datasets = {r.overrides.get("data.name", "pneumoniamnist") for r in runs}
    assert datasets <= {"pneumoniamnist", "breastmnist", "retinamnist"}, datasets
  for p in study.post:  # post steps read runs of the grid
    assert set(p.needs) <= {r.name for r in runs}, p.name


# ----------------------------------------------------------------------------- CLI, run_all


@pytest.mark.slow
def test_cli_runs_the_grid(done_sweep):
  sweep_dir, res = done_sweep
  assert res.returncode == 0, res.stderr[-3000:]
  assert "2 runs, 0 complete, 2 to run" in res.stdout
  for name in (RUN_IID, RUN_A1):
    assert (sweep_dir / name / "summary.json").exists()
    assert (sweep_dir / "logs" / f"{name}.log").exists()
  manifest = json.loads((sweep_dir / "sweep.json").read_text())
  assert manifest["study"] == "tiny" and manifest["preset"] == "cpu"
  assert [(r["name"], r["status"]) for r in manifest["runs"]] == [(RUN_IID, "done"),
                                                                  (RUN_A1, "done")]
  assert manifest["post"] == []
  iid = json.loads((sweep_dir / RUN_IID / "config.json").read_text())
  a1 = json.loads((sweep_dir / RUN_A1 / "config.json").read_text())
  assert iid["partition"]["kind"] == "iid"
  assert a1["partition"]["kind"] == "dirichlet" and a1["partition"]["alpha"] == 1.0
  for c in (iid, a1):
    assert c["model"]["name"] == "cnn_tiny" and c["fl"]["rounds"] == 1 and c["seed"] == 0
  summary = json.loads((sweep_dir / RUN_A1 / "summary.json").read_text())
  assert summary["rounds_completed"] == 1


def test_cli_second_invocation_skips_complete_runs(complete_sweep, study_file, tmp_path):
  sweep_dir = copy_sweep(complete_sweep, tmp_path)
  mtimes = {n: (sweep_dir / n / "summary.json").stat().st_mtime_ns for n in (RUN_IID, RUN_A1)}
  res = run_cli(f"--study={study_file}:cpu", f"--workdir={sweep_dir}")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "2 runs, 2 complete, 0 to run" in res.stdout
  assert statuses(sweep_dir) == {RUN_IID: "skipped (complete)", RUN_A1: "skipped (complete)"}
  for n, t in mtimes.items():
    assert (sweep_dir / n / "summary.json").stat().st_mtime_ns == t


@pytest.mark.slow
def test_cli_resumes_only_the_incomplete_run(done_sweep, study_file, tmp_path):
  sweep_dir = copy_sweep(done_sweep, tmp_path)
  kept = (sweep_dir / RUN_IID / "summary.json").stat().st_mtime_ns
  (sweep_dir / RUN_A1 / "summary.json").unlink()  # as if interrupted after the checkpoint
  res = run_cli(f"--study={study_file}:cpu", f"--workdir={sweep_dir}")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "2 runs, 1 complete, 1 to run" in res.stdout
  assert statuses(sweep_dir) == {RUN_IID: "skipped (complete)", RUN_A1: "done"}
  assert (sweep_dir / RUN_A1 / "summary.json").exists()
  assert (sweep_dir / RUN_IID / "summary.json").stat().st_mtime_ns == kept
  log = (sweep_dir / "logs" / f"{RUN_A1}.log").read_text()
  assert "resumed" in log
  assert not (sweep_dir / "logs" / f"{RUN_IID}.log").read_text().count("resumed")


@pytest.mark.slow
def test_cli_reports_a_failed_run_and_finishes_the_others(study_file, tmp_path):
  sweep_dir = tmp_path / "sweep"
  res = run_cli(f"--study={study_file}:fail", f"--workdir={sweep_dir}", "--jobs=2")
  assert res.returncode == 1
  assert statuses(sweep_dir) == {"lr-bad+seed-0": "failed: exit 2", "lr-ok+seed-0": "done"}
  assert (sweep_dir / "lr-ok+seed-0" / "summary.json").exists()
  assert "client_lr" in (sweep_dir / "logs" / "lr-bad+seed-0.log").read_text()
  assert "lr-bad+seed-0" in res.stderr and "error:" in res.stderr
  assert "Traceback" not in res.stderr


def test_cli_dry_run_prints_commands_and_runs_nothing(study_file, tmp_path):
  sweep_dir = tmp_path / "sweep"
  res = run_cli(f"--study={study_file}:cpu", f"--workdir={sweep_dir}", "--dry_run")
  assert res.returncode == 0, res.stderr
  cmds = [line for line in res.stdout.splitlines() if line.startswith("$ ")]
  assert len(cmds) == 2
  assert all("python -m fedjax_med.cli.train" in c and "--config=configs/quickstart.py" in c
             for c in cmds)
  assert "--config.partition.kind=iid" in cmds[0] and "--config.partition.alpha=1.0" in cmds[1]
  for name in (RUN_IID, RUN_A1):
    assert not (sweep_dir / name).exists()
  assert not (sweep_dir / "sweep.json").exists()
  assert not (sweep_dir / "logs").exists() or not any((sweep_dir / "logs").iterdir())


def test_cli_only_filters_runs(study_file, tmp_path):
  res = run_cli(f"--study={study_file}:cpu", f"--workdir={tmp_path / 'sweep'}", "--dry_run",
                "--only=a1")
  assert res.returncode == 0, res.stderr
  cmds = [line for line in res.stdout.splitlines() if line.startswith("$ ")]
  assert len(cmds) == 1 and RUN_A1 in cmds[0]


@pytest.mark.parametrize("spec", ["configs/studies/nope.py:cpu", "STUDY:nope"])
def test_cli_bad_study_exits_2_with_one_message(spec, study_file, tmp_path):
  spec = spec.replace("STUDY", str(study_file))
  res = run_cli(f"--study={spec}", f"--workdir={tmp_path / 'sweep'}")
  assert res.returncode == 2
  errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in res.stderr
  assert not (tmp_path / "sweep").exists()


# ----------------------------------------------------------------------------- post steps

POST_SCRIPT = '''
import sys
out = sys.argv[1]
with open(out + ".calls", "a") as f:
  f.write("x\\n")
with open(out, "w") as f:
  f.write(" ".join(sys.argv[2:]))
'''


def test_post_steps_run_once_after_the_grid(complete_sweep, study_file, tmp_path):
  sweep_dir = copy_sweep(complete_sweep, tmp_path)
  script = tmp_path / "post.py"
  script.write_text(POST_SCRIPT)
  already = tmp_path / "already.txt"
  already.write_text("old")
  post = (
      Post("scan", (str(script), "{sweep}/scan.txt", f"--workdirs={{sweep}}/{RUN_IID}"),
           "{sweep}/scan.txt", (RUN_IID, RUN_A1)),
      Post("done_before", (str(script), str(already)), str(already)),
      Post("needs_missing", (str(script), "{sweep}/never.txt"), "{sweep}/never.txt",
           (RUN_IID, "partition-q+seed-0")),
  )
  study = dataclasses.replace(loader.load_study(f"{study_file}:cpu"), post=post)
  lines = []
  manifest = runner.run_all(study, str(sweep_dir), log=lines.append)
  status = {p["name"]: p["status"] for p in manifest["post"]}
  assert status["scan"] == "done"
  assert status["done_before"] == "skipped (complete)"
  assert status["needs_missing"].startswith("failed") and "partition-q+seed-0" in status[
      "needs_missing"]
  assert runner.failed(manifest) == ["needs_missing"]
  assert (sweep_dir / "scan.txt").read_text() == f"--workdirs={sweep_dir}/{RUN_IID}"
  assert already.read_text() == "old" and not (tmp_path / "already.txt.calls").exists()
  assert not (sweep_dir / "never.txt").exists() and not (sweep_dir / "never.txt.calls").exists()
  assert [r["status"] for r in manifest["runs"]] == ["skipped (complete)"] * 2
  assert statuses(sweep_dir)["scan"] == "done"  # sweep.json written
  # second time: the output exists, the step is skipped, the script is not called again
  manifest = runner.run_all(study, str(sweep_dir), log=lines.append)
  assert {p["name"]: p["status"] for p in manifest["post"]}["scan"] == "skipped (complete)"
  assert (sweep_dir / "scan.txt.calls").read_text() == "x\n"


def test_failing_post_step_is_reported(complete_sweep, study_file, tmp_path):
  sweep_dir = copy_sweep(complete_sweep, tmp_path)
  script = tmp_path / "boom.py"
  script.write_text("import sys\nsys.exit(3)\n")
  study = dataclasses.replace(loader.load_study(f"{study_file}:cpu"),
                              post=(Post("boom", (str(script),), "{sweep}/boom.txt"),))
  manifest = runner.run_all(study, str(sweep_dir), log=lambda _: None)
  assert manifest["post"][0]["status"] == "failed: exit 3"
  assert runner.failed(manifest) == ["boom"]


# ----------------------------------------------------------------------------- seeds vectorized


def test_seed_groups_are_consecutive_seeds_of_the_same_point():
  study = make_study(({"partition": {"iid": {"partition.kind": "iid"},
                                     "a1": {"partition.alpha": 1.0}}},), seeds=(0, 1, 2, 5))
  groups = runner.seed_groups(grid.expand(study))
  assert [[r.name for r in g] for g in groups] == [
      ["partition-iid+seed-0", "partition-iid+seed-1", "partition-iid+seed-2"],
      ["partition-iid+seed-5"],
      ["partition-a1+seed-0", "partition-a1+seed-1", "partition-a1+seed-2"],
      ["partition-a1+seed-5"]]
  # a --override of the seed makes every run its own process
  assert all(len(g) == 1 for g in runner.seed_groups(grid.expand(study), {"seed": 3}))


def test_group_command_trains_the_seeds_into_their_own_workdirs(tmp_path):
  study = make_study(({"partition": {"iid": {"partition.kind": "iid"}}},), seeds=(3, 4))
  runs = grid.expand(study)
  argv = runner.group_command(study, runs, str(tmp_path))
  assert "--config.seed=3" in argv and "--config.runs.seeds=2" in argv
  assert not [a for a in argv if a.startswith("--workdir=")]
  assert argv[-1] == "--run_workdirs=" + ",".join(str(tmp_path / r.name) for r in runs)
  assert runner.group_command(study, runs[:1], str(tmp_path)) == runner.command(
      study, runs[0], str(tmp_path))


@pytest.mark.slow
def test_vectorized_seeds_write_the_runs_separate_processes_write(study_file, tmp_path):
  """--vectorize_seeds=yes: the 2 seeds of each point in one process; every run's workdir
  holds what the run alone writes (config.json identical, same metrics to float rounding)."""
  text = study_file.read_text().replace("seeds=(0,)", "seeds=(0, 1)")
  two_seeds = tmp_path / "two_seeds.py"
  two_seeds.write_text(text)
  out = {}
  for how in ("yes", "no"):
    res = run_cli(f"--study={two_seeds}:cpu", f"--workdir={tmp_path / how}",
                  f"--vectorize_seeds={how}")
    assert res.returncode == 0, res.stderr[-3000:]
    out[how] = res
  assert "partition-iid+seed-0..2-seeds" in out["yes"].stdout
  runs = [f"partition-{p}+seed-{s}" for p in ("iid", "a1") for s in (0, 1)]
  assert statuses(tmp_path / "yes") == {name: "done" for name in runs}
  for name in runs:
    vec, alone = tmp_path / "yes" / name, tmp_path / "no" / name
    assert (json.loads((vec / "config.json").read_text())
            == json.loads((alone / "config.json").read_text()))
    a, b = (json.loads((d / "summary.json").read_text()) for d in (vec, alone))
    assert a["heterogeneity"] == b["heterogeneity"] and a["vectorized_runs"] == 2
    assert a["test"]["auc"] == pytest.approx(b["test"]["auc"], abs=1e-5)
    assert (tmp_path / "yes" / "logs" / f"{name}.log").exists()  # the report reads it
  manifest = json.loads((tmp_path / "yes" / "sweep.json").read_text())
  assert all("--config.runs.seeds=2" in r["trained_with"] for r in manifest["runs"])
  # Seeds the trainer refuses to vectorize (an attack) run one by one instead.
  res = run_cli(f"--study={two_seeds}:cpu", f"--workdir={tmp_path / 'attacked'}",
                "--vectorize_seeds=yes", "--only=iid", "--override=attack.kind=sign_flip",
                "--override=attack.fraction=0.5")
  assert res.returncode == 0, res.stderr[-3000:]
  assert "cannot train vectorized; running them one by one" in res.stdout
  assert statuses(tmp_path / "attacked") == {f"partition-iid+seed-{s}": "done" for s in (0, 1)}
