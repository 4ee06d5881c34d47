"""Smoke tests of the bench scripts at tiny sizes (seconds, not benchmarks)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import algorithm_speed, cohort, many_runs, round_speed, workload, zoo
from tests.testing import unoptimized_compiles

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPTS = ("round_speed.py", "algorithm_speed.py", "zoo.py", "analysis_speed.py",
            "privacy_speed.py", "aggregator_speed.py", "many_runs.py")


def _last_json(capsys) -> dict:
  return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def fast_compile():
  # Compile time dominates at this size; the numbers are not checked.
  with unoptimized_compiles():
    yield


@pytest.mark.slow
def test_round_speed_tiny_prints_json_last(capsys, fast_compile):
  round_speed.main([
      "--models=cnn_tiny", "--ks=4", "--local-steps=2", "--batch-size=4", "--repeats=1",
      "--chunk=auto", "--chunk-candidates=2", "--tune-k=4", "--mem-ks=4,8",
      "--skip-quickstart",
  ])  # fmt: skip
  out = _last_json(capsys)
  for key in (
    "vs_loop_k64",
    "vs_central_k64",
    "peak_mem_ratio",
    "backend",
    "device_count",
    "jax_version",
    "time_to_first_round_s",
    "chunk",
    "results",
  ):
    assert key in out, key
  r = out["results"]["cnn_tiny"]["4"]
  for key in ("one_jit_s", "loop_s", "central_s", "vs_loop", "vs_central", "compile_s"):
    assert r[key] > 0, key
  # The loop computes the same round as the one-jit round.
  assert r["loop_vs_one_jit_max_abs_diff"] < 1e-5
  assert out["peak_mem_ratio"] > 0
  assert out["chunk"]["cnn_tiny"] == "2"

  large = cohort.large_cohort(
    workload.Setup("cnn_tiny", "auto", 1),
    2,
    repeats=1,
    n_examples=200,
    num_clients=40,
    per_round=8,
    steps=2,
    batch=4,
  )
  assert large["round_s"] > 0 and large["batch_build_s"] > 0


@pytest.mark.slow
def test_algorithm_speed_rows_come_from_the_registry(capsys, fast_compile):
  out = algorithm_speed.main(["--quick"])
  assert _last_json(capsys) == json.loads(json.dumps(out))
  rows = {k.removesuffix("_vs_fedavg") for k in out if k.endswith("_vs_fedavg")}
  assert rows == set(algorithm_speed.names(batchnorm=False))
  assert {"fedavg", "fedadam", "scaffold", "feddyn", "fedavg+swa"} <= rows
  assert "centralized" not in rows and "fedbn" not in rows
  assert "fedbn" in algorithm_speed.names(batchnorm=True)
  assert out["fedavg_vs_fedavg"] == 1.0 and all(out[f"{n}_vs_fedavg"] > 0 for n in rows)


@pytest.mark.slow
def test_zoo_tiny_prints_json_last(capsys, fast_compile):
  zoo.main(["--models=cnn_tiny", "--k=2", "--steps=1", "--batch=2", "--repeats=1"])
  (row,) = _last_json(capsys)["models"]
  assert row["model"] == "cnn_tiny" and row["params"] > 0 and row["vs_loop"] > 0


@pytest.mark.slow
def test_zoo_3d_tiny_reports_round_and_memory(capsys, fast_compile):
  zoo.main(["--depth=8", "--size=8", "--models=cnn3d_tiny", "--k=2", "--steps=1", "--batch=2",
            "--repeats=1", "--mem-k=4"])
  out = _last_json(capsys)
  (row,) = out["models"]
  assert out["image_shape"] == [8, 8, 8, 1]
  assert row["model"] == "cnn3d_tiny" and row["params"] > 0 and row["vs_loop"] > 0
  assert row["mem_k"] == 4 and row["mem_temp_mib"] > 0 and row["mem_argument_mib"] > 0
  assert "goal" not in row  # the goal is for cnn3d at K=16, S=5, B=32 on 28^3 only


def test_round_batch_of_volumes():
  batch = workload.make_round_batch(3, 2, 4, image_shape=(6, 5, 4, 1))
  assert batch.image.shape == (3, 2, 4, 6, 5, 4, 1) and batch.image.dtype == np.uint8
  assert batch.label.shape == (3, 2, 4) and set(np.unique(batch.label)) <= {0, 1}
  assert workload.make_round_batch(1, 1, 2).image.shape == (1, 1, 2, *workload.IMAGE_SHAPE)


def test_many_runs_quick_checks_the_vectorized_round_equals_the_single_ones(capsys,
                                                                            fast_compile):
  many_runs.main(["--quick", "--runs=2"])
  out = _last_json(capsys)
  r = out["round"]
  assert r["runs"] == 2 and r["sequential_s"] > 0 and r["vectorized_s"] > 0
  assert out["vectorized_vs_sequential"] > 0
  assert r["max_abs_param_diff"] < 1e-5


@pytest.mark.parametrize("script", _SCRIPTS)
def test_bench_imports_without_clu_or_ml_collections(script):
  # The lent GPU machine has neither: the bench must not pull them in.
  code = (
    "import runpy, sys; runpy.run_path(sys.argv[1], run_name='not_main'); "
    "bad = [m for m in ('clu', 'ml_collections') if m in sys.modules]; "
    "sys.exit(f'imported {bad}' if bad else 0)"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  path = os.path.join(_REPO, "bench", script)
  proc = subprocess.run(
    [sys.executable, "-c", code, path], capture_output=True, text=True, env=env, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
