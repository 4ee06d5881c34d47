"""The analysis CLIs on tiny synthetic runs: JSON outputs, plots, and exit code 2 on bad input."""

import importlib.util
import json
import logging
import os

import pytest

from configs import base
from fedjax_med import train
from fedjax_med.analysis import measures, plots
from fedjax_med.analysis import runs as runs_lib
from fedjax_med.data import synthetic

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_cli(name):
  spec = importlib.util.spec_from_file_location(f"analysis_cli_{name}",
                                                os.path.join(_REPO, "analysis", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _config(data_root, seed):
  c = base.get_config()
  c.seed = seed
  c.data.root = data_root
  c.data.download = False
  c.data.verify_md5 = False
  c.model.name = "cnn_tiny"
  c.partition.kind = "iid"
  c.fl.rounds = 2
  c.fl.num_clients = 4
  c.fl.clients_per_round = 2
  c.fl.local_steps = 2
  c.fl.batch_size = 8
  c.eval.every = 2
  c.eval.batch_size = 64
  c.ckpt.every = 1  # checkpoints at rounds 1 and 2: a trajectory
  c.log.progress = "none"
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("medmnist")
  synthetic.write_npz(root / "pneumoniamnist.npz", name="pneumoniamnist", n_train=96, n_val=16,
                      n_test=16, noise=0.6, seed=0)
  workdirs = []
  for seed in (0, 1):
    workdir = str(tmp_path_factory.mktemp(f"run{seed}"))
    train.train_and_evaluate(_config(str(root), seed), workdir)
    workdirs.append(workdir)
  return workdirs


SHARPNESS_ARGS = ["--examples=40", "--batch_size=16", "--lanczos_iters=4", "--top_k=2",
                  "--probes=3", "--eps_steps=2", "--m=16"]


def test_sharpness_cli_writes_json(runs, capsys):
  cli = _load_cli("sharpness")
  assert cli.main([f"--workdir={runs[0]}", "--checkpoint=1", *SHARPNESS_ARGS]) == 0
  out = json.load(open(os.path.join(runs[0], "analysis", "sharpness.json")))
  for key in ("loss", "lambda_max", "top_eigenvalues", "trace", "trace_stderr", "eps_sharpness",
              "eps_sharpness_abs", "m_sharpness", "m_sharpness_rel", "seconds",
              "num_params", "options"):
    assert key in out, key
  assert out["round"] == 1 and out["examples"] == 40
  assert len(out["top_eigenvalues"]) == 2 and out["lambda_max"] == out["top_eigenvalues"][0]
  assert out["eps_sharpness_abs"] >= 0 and out["trace_stderr"] > 0
  assert "lambda_max=" in capsys.readouterr().out


@pytest.mark.slow
def test_landscape_cli_two_runs_and_trajectory(runs, capsys):
  cli = _load_cli("landscape")
  args = [f"--workdirs={runs[0]},{runs[1]}", "--examples=24", "--batch_size=24", "--grid=3",
          "--interp_points=3", "--interp_margin=0.5", "--trajectory", "--density_order=3",
          "--density_runs=1"]
  assert cli.main(args) == 0
  stdout = capsys.readouterr().out
  out_dir = os.path.join(runs[0], "analysis")
  out = json.load(open(os.path.join(out_dir, "landscape.json")))
  assert out["alphas"] == [-1.0, 0.0, 1.0]
  assert out["line_1"][1] == pytest.approx(out["loss"], rel=1e-5)
  assert len(out["surface"]) == 3 and out["surface"][1][1] == pytest.approx(out["loss"], rel=1e-5)
  interp = out["interpolation"]
  assert interp["t"] == [-0.5, 0.0, 0.5, 1.0, 1.5]
  assert interp["loss"][1] == pytest.approx(out["loss"], rel=1e-5)
  assert out["trajectory"]["rounds"] == [1, 2]
  assert out["trajectory"]["loss"][-1] == pytest.approx(out["loss"], rel=1e-5)  # A is round 2
  assert set(out["density"]) == {"A", "B"} and out["distance"]["distance"] > 0
  if plots.available():
    for name in ("landscape_1d.png", "landscape_2d.png", "interpolation.png", "trajectory.png",
                 "density.png"):
      assert os.path.getsize(os.path.join(out_dir, name)) > 0, name
  else:
    assert plots.MISSING_MESSAGE in stdout


def test_landscape_cli_without_matplotlib_writes_json_and_says_so(runs, tmp_path, capsys,
                                                                   monkeypatch):
  monkeypatch.setattr(plots, "available", lambda: False)
  cli = _load_cli("landscape")
  assert cli.main([f"--workdirs={runs[0]}", "--examples=8", "--grid=2", "--no_surface",
                   "--density_order=0", f"--output_dir={tmp_path}"]) == 0
  assert plots.MISSING_MESSAGE in capsys.readouterr().out
  assert os.listdir(tmp_path) == ["landscape.json"]


@pytest.mark.parametrize("case", ["missing", "no_config", "no_checkpoint", "bad_round"])
def test_bad_workdir_exits_2_with_one_message(runs, tmp_path, capsys, case):
  cli = _load_cli("sharpness")
  workdir, extra, message = str(tmp_path / "nope"), [], "does not exist"
  if case == "no_config":
    workdir, message = str(tmp_path), "no config.json"
  elif case == "no_checkpoint":
    workdir, message = str(tmp_path), "no checkpoints"
    with open(runs[0] + "/config.json") as src, open(tmp_path / "config.json", "w") as dst:
      dst.write(src.read())
  elif case == "bad_round":
    workdir, extra, message = runs[0], ["--checkpoint=7"], "available rounds: 1, 2"
  assert cli.main([f"--workdir={workdir}", *extra]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and message in err and "Traceback" not in err
  landscape = _load_cli("landscape")
  assert landscape.main([f"--workdirs={workdir}", *extra]) == 2


def test_round_metrics_fn_is_deterministic_per_round(runs):
  run = runs_lib.open_run(runs[0])
  _, variables = runs_lib.restore(run)
  images, labels = runs_lib.eval_subset(run.dataset, "train", 16, seed=0)
  options = measures.SharpnessOptions(batch_size=16, lanczos_iters=2, top_k=1, probes=2, eps=0, m=0)
  fn = measures.make_round_metrics_fn(run.model, images, labels, options)
  first, again = fn(variables, 2), fn(variables, 2)
  assert first == again and "seconds" not in first
  assert {"loss", "lambda_max", "trace", "trace_stderr", "lanczos_steps"} <= set(first)


def test_sharpness_logs_compiles_and_progress_lines(runs, caplog, tmp_path):
  caplog.set_level(logging.INFO)
  cli = _load_cli("sharpness")
  assert cli.main([f"--workdir={runs[0]}", "--progress=lines", f"--output={tmp_path / 's.json'}",
                   *SHARPNESS_ARGS]) == 0
  messages = [r.getMessage() for r in caplog.records]
  assert any(m.startswith("compiling lanczos") for m in messages)
  assert any(m.startswith("compiled lanczos in ") for m in messages)
  steps = [m for m in messages if m.startswith("measure ")]
  assert steps[-1].startswith("measure 5/5") and "ETA" in steps[-1]


def test_landscape_rows_are_the_surface(runs, tmp_path):
  cli = _load_cli("landscape")
  assert cli.main([f"--workdirs={runs[0]}", "--examples=8", "--grid=3", "--density_order=0",
                   "--batch_size=8", f"--output_dir={tmp_path}", "--progress=none"]) == 0
  result = json.loads((tmp_path / "landscape.json").read_text())
  surface = result["surface"]
  assert len(surface) == 3 and all(len(row) == 3 for row in surface)
  # the centre row is line 2 (alpha_1 = 0) and the centre is the loss at A
  assert surface[1] == pytest.approx(result["line_2"], rel=1e-5)
  assert surface[1][1] == pytest.approx(result["loss"], rel=1e-5)
