"""Smoke test of bench/aggregator_speed.py at tiny sizes: every aggregator timed, its memory
recorded, the JSON line last (that it imports without clu / ml_collections:
tests/bench_test.py)."""

import json
import math

import pytest

from bench import aggregator_speed
from fedjax_med.algorithms import aggregators
from tests.testing import unoptimized_compiles


@pytest.mark.slow
def test_quick_run_prints_ratios_and_memory_last(capsys):
  with unoptimized_compiles():  # compile time dominates at this size; no figure is checked
    out = aggregator_speed.main(["--quick", "--k=4"])
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line == json.loads(json.dumps(out))
  k4 = line["by_k"]["4"]
  robust = [n for n in aggregator_speed.NAMES if n != "mean"]
  assert set(k4["round_vs_mean"]) == set(k4["alone_vs_mean"]) == set(robust)
  for ratios in (k4["round_vs_mean"], k4["alone_vs_mean"]):
    assert all(math.isfinite(v) and v > 0 for v in ratios.values())
  per_client = k4["stacked_delta_bytes"]["median"] // 4
  assert k4["stacked_delta_bytes"]["mean"] == 0 and per_client > 0
  assert all(k4["stacked_delta_bytes"][n] == 4 * per_client for n in robust)
  assert set(aggregator_speed.NAMES) == set(aggregators.AGGREGATORS) - {"stacked_mean"}

