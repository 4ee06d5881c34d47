"""bench/harness.py with a fake clock: the rotation, medians and ratios, exactly.

Every workload advances a fake clock by a scripted number of seconds per call
(dyadic values, so the float arithmetic is exact), and the harness reads that
clock: nothing sleeps and nothing depends on the machine's speed.
"""

import json

import jax.numpy as jnp
import pytest

from bench import harness


class FakeClock:
  def __init__(self):
    self.now = 0.0

  def __call__(self) -> float:
    return self.now


def scripted(clock: FakeClock, seconds: dict[str, list[float]], calls: list[str]):
  """Workloads that log their name and take the next scripted number of seconds."""
  remaining = {name: iter(ts) for name, ts in seconds.items()}

  def make(name):
    def run():
      calls.append(name)
      step = next(remaining[name])
      if step is None:
        raise MemoryError(f"{name} out of memory\nsecond line")
      clock.now += step
      return f"{name}:{len(calls)}"

    return run

  return {name: make(name) for name in seconds}


def run_scripted(seconds, repeats, **kw):
  clock, calls = FakeClock(), []
  timings = harness.interleave(scripted(clock, seconds, calls), repeats, clock=clock,
                               block=lambda x: x, **kw)
  return timings, calls


def test_rotation():
  names = ("a", "b", "c")
  assert [harness.rotation(names, r) for r in range(4)] == [
    ("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"), ("a", "b", "c")]
  assert harness.rotation((), 3) == ()


def test_interleave_warms_up_then_rotates_each_repeat():
  seconds = {"a": [8.0, 1.0, 2.0, 3.0], "b": [16.0, 4.0, 5.0, 6.0], "c": [32.0, 7.0, 8.0, 9.0]}
  t, calls = run_scripted(seconds, 3)
  # Warm-up in the given order, then repeat r runs rotation(names, r).
  assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]
  assert t.orders == (("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b"))
  assert t.warmup_s == {"a": 8.0, "b": 16.0, "c": 32.0}
  assert t.times == {"a": (1.0, 2.0, 3.0), "b": (4.0, 5.0, 6.0), "c": (7.0, 8.0, 9.0)}
  assert t.outputs == {"a": "a:11", "b": "b:12", "c": "c:10"}  # each one's last call
  assert (t.median("b"), t.best("b")) == (5.0, 4.0)
  assert t.errors == {}


def test_without_warmup_every_call_is_timed():
  t, calls = run_scripted({"a": [1.0, 2.0], "b": [4.0, 8.0]}, 2, warmup=False)
  assert calls == ["a", "b", "b", "a"]
  assert t.warmup_s == {} and t.times == {"a": (1.0, 2.0), "b": (4.0, 8.0)}


def test_block_is_applied_to_every_output():
  clock, blocked = FakeClock(), []
  harness.interleave({"a": lambda: 7}, 2, clock=clock, block=lambda x: blocked.append(x) or x)
  assert blocked == [7, 7, 7]  # warm-up + 2 repeats


def test_ratio_is_the_median_of_per_repeat_ratios():
  # Repeat 3 ran under load for "a" only: per-repeat ratios are 2, 2, 1.125.
  t = harness.Timings({"a": (2.0, 16.0, 9.0), "base": (1.0, 8.0, 8.0)})
  assert t.per_repeat("a", "base") == [2.0, 2.0, 1.125]
  assert t.ratio("a", "base") == 2.0
  assert t.median("a") / t.median("base") == 1.125  # what a ratio of medians would say
  assert t.ratio("base", "base") == 1.0


def test_ratio_against_the_fastest_of_several_baselines():
  t = harness.Timings({"x": (4.0, 4.0, 4.0), "p": (2.0, 8.0, 1.0), "q": (8.0, 1.0, 2.0)})
  assert t.per_repeat("x", ("p", "q")) == [2.0, 4.0, 4.0]
  assert t.ratio("x", ("p", "q")) == 4.0
  # A baseline without times is passed over; with none left there is no ratio.
  t = harness.Timings({"x": (4.0,), "p": (2.0,), "gone": ()})
  assert t.ratio("x", ("gone", "p")) == 2.0
  assert t.ratio("x", "gone") is None and t.median("gone") is None and t.best("gone") is None


def test_scaled_extrapolates_one_workload():
  t = harness.Timings({"loop": (1.0, 2.0), "one": (1.0, 1.0)}).scaled("loop", 4.0)
  assert t.times == {"loop": (4.0, 8.0), "one": (1.0, 1.0)}
  assert t.ratio("loop", "one") == 6.0
  assert t.rounded(1) == {"loop": [4.0, 8.0], "one": [1.0, 1.0]}


def test_optional_failure_is_recorded_and_not_run_again():
  seconds = {"a": [1.0, 2.0, 4.0], "central": [1.0, None, 99.0]}
  t, calls = run_scripted(seconds, 3, warmup=False, optional=("central",))
  assert calls == ["a", "central", "central", "a", "a"]
  assert t.errors == {"central": "MemoryError: central out of memory"}
  assert t.times == {"a": (1.0, 2.0, 4.0), "central": ()}
  assert t.orders == (("a", "central"), ("central", "a"), ("a",))


def test_required_failure_propagates():
  with pytest.raises(MemoryError):
    run_scripted({"a": [1.0, None]}, 2, warmup=False)


def test_time_call_and_compile_ahead_use_the_clock():
  clock = FakeClock()

  def slow():
    clock.now += 0.5
    return 3

  assert harness.time_call(slow, clock=clock, block=lambda x: x) == (0.5, 3)
  compiled, seconds = harness.compile_ahead(lambda x: 2 * x, jnp.float32(3.0), clock=clock)
  assert seconds == 0.0 and float(compiled(jnp.float32(3.0))) == 6.0


def test_median_goal_fmt_and_short_error():
  assert harness.median([3.0, None, 1.0, 2.0]) == 2.0
  assert harness.median([None]) is None
  assert harness.goal(1.2, ">=1.0") == "(goal >=1.0: ok)"
  assert harness.goal(1.3, "<=1.2") == "(goal <=1.2: MISSED)"
  assert harness.goal(None, "<=1.2") == "(goal <=1.2: n/a)"
  assert (harness.fmt(None), harness.fmt(1.23456, ".2f")) == ("-", "1.23")
  assert harness.short_error(ValueError("bad\nmore")) == "ValueError: bad"


def test_table_aligns_columns():
  text = harness.table(("name", "s"), [("a", "1.5"), ("longer", "10.25")])
  assert text.splitlines() == ["name        s", "a         1.5", "longer  10.25"]
  t = harness.Timings({"base": (2.0, 2.0), "x": (4.0, 6.0)})
  rows = harness.ratio_table(t, "base", {"base": 1.0}).splitlines()
  assert rows[0].split() == ["workload", "median", "s", "vs", "base", "compile", "s"]
  assert rows[2].split() == ["x", "5.000", "2.50", "-"]


def test_environment_and_emit_json_last_line(capsys):
  env = harness.environment()
  assert set(env) == {"backend", "device_count", "device_kind", "jax_version"}
  print("a human table")
  out = harness.emit_json({"ratio": jnp.float32(0.5), **env})
  last = capsys.readouterr().out.strip().splitlines()[-1]
  assert json.loads(last) == {**out, "ratio": 0.5}
