"""Smoke test of bench/round_speed.py at a tiny size (seconds, not a benchmark)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import pytest

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPT = os.path.join(_REPO, "bench", "round_speed.py")


def _load():
  spec = importlib.util.spec_from_file_location("round_speed", _SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def fast_compile():
  # Compile time dominates at this size; the numbers are not checked.
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


def test_round_speed_tiny_prints_json_last(capsys, fast_compile):
  rs = _load()
  rs.main([
      "--models=cnn_tiny", "--ks=4", "--local-steps=2", "--batch-size=4", "--repeats=1",
      "--chunk=auto", "--chunk-candidates=2", "--tune-k=4", "--mem-ks=4,8",
      "--skip-quickstart",
  ])  # fmt: skip
  lines = capsys.readouterr().out.strip().splitlines()
  out = json.loads(lines[-1])
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

  large = rs.large_cohort(
    rs.Setup("cnn_tiny", "auto", 1),
    2,
    repeats=1,
    n_examples=200,
    num_clients=40,
    per_round=8,
    steps=2,
    batch=4,
  )
  assert large["round_s"] > 0 and large["batch_build_s"] > 0


def test_bench_imports_without_clu_or_ml_collections():
  # The lent GPU machine has neither: the bench must not pull them in.
  code = (
    "import runpy, sys; runpy.run_path(sys.argv[1], run_name='not_main'); "
    "bad = [m for m in ('clu', 'ml_collections') if m in sys.modules]; "
    "sys.exit(f'imported {bad}' if bad else 0)"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
    [sys.executable, "-c", code, _SCRIPT], capture_output=True, text=True, env=env, timeout=120
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
