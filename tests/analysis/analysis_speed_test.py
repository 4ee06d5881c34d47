"""Smoke test of bench/analysis_speed.py at a tiny size (seconds, not a benchmark)."""

import json

import pytest

from bench import analysis_speed


@pytest.mark.slow
def test_analysis_speed_tiny_prints_json_last(capsys):
  analysis_speed.main(["--model=cnn_tiny", "--size=8", "--examples=32", "--train-batch=16",
                       "--eval-batch=32", "--lanczos-iters=3", "--lanczos-tol=0", "--probes=2",
                       "--repeats=1"])
  out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for key in ("lambda_max_vs_epoch", "trace_vs_epoch", "hvp_vs_epoch", "meets_goal", "seconds",
              "compile_s", "backend", "jax_version"):
    assert key in out, key
  assert out["lambda_max_vs_epoch"] > 0 and out["trace_vs_epoch"] > 0
