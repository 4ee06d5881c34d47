"""The bench harness: interleaved timing, per-repeat ratios, environment facts, one JSON line.

Every bench script compares workloads that do comparable work (a one-jit round
vs a per-client loop vs centralized steps; each algorithm vs FedAvg; each
sharpness metric vs an epoch). This module is the machinery they share:

- :func:`compile_ahead` lowers and compiles a function on its arguments and
  reports the seconds, so compile time is never mixed into a warm timing.
- :func:`interleave` times zero-argument workloads repeat by repeat. Each
  repeat runs every workload once, in an order rotated by one each repeat, and
  blocks on each result with ``jax.block_until_ready`` (JAX dispatch is
  asynchronous: without it a timing measures only the dispatch). An optional
  warm-up call per workload (compile and first-touch costs) is timed apart.
- :class:`Timings` holds the seconds and gives medians and ratios against a
  baseline, taken per repeat and then the median of the ratios.
- :func:`environment`, :func:`table`, :func:`goal` and :func:`emit_json` print
  what every script prints: the backend facts, a human table, and last, one
  JSON line (the machine-readable result; always the last line of stdout).

Why interleave and rotate: on a shared machine the speed drifts on a scale of
seconds (other processes, clocks, caches). Timing all repeats of A, then all of
B, folds that drift into A/B; running A and B back to back in every repeat puts
both under the same conditions, and rotating the order stops one workload from
always running first (cold caches) or always after the same neighbour.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax

Clock = Callable[[], float]


def rotation(names: Sequence[str], repeat: int) -> tuple[str, ...]:
  """The order of ``names`` in repeat ``repeat``: rotated left by ``repeat`` places."""
  names = tuple(names)
  shift = repeat % len(names) if names else 0
  return names[shift:] + names[:shift]


def median(values: Sequence[float | None]) -> float | None:
  """The median of the values that are not None (None if there are none)."""
  values = [v for v in values if v is not None]
  return statistics.median(values) if values else None


def short_error(e: BaseException) -> str:
  """``"TypeName: first line"`` of an exception (at most 200 characters of the message)."""
  lines = str(e).strip().splitlines()
  return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


def compile_ahead(fn: Callable, *args, clock: Clock = time.perf_counter):
  """Lowers and compiles ``fn`` (jitted here if it is not) on ``args``.

  Returns:
    ``(compiled, seconds)``: call ``compiled(*args)`` to run it without tracing.
  """
  jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
  start = clock()
  compiled = jitted.lower(*args).compile()
  return compiled, clock() - start


def time_call(
    fn: Callable[[], Any],
    *,
    clock: Clock = time.perf_counter,
    block: Callable[[Any], Any] = jax.block_until_ready,
) -> tuple[float, Any]:
  """``(seconds, output)`` of ``fn()``, timed until ``block`` returns on its output."""
  start = clock()
  out = block(fn())
  return clock() - start, out


@dataclasses.dataclass(frozen=True)
class Timings:
  """Seconds per repeat of each workload (from :func:`interleave`).

  Attributes:
    times: name -> seconds of each repeat, in repeat order (empty if it failed).
    warmup_s: name -> seconds of the warm-up call (compile and first run), if one ran.
    orders: the order the workloads ran in, one tuple per repeat.
    outputs: name -> the output of its last call (to check that results agree).
    errors: name -> why an optional workload failed (it then has no times).
  """

  times: Mapping[str, tuple[float, ...]]
  warmup_s: Mapping[str, float] = dataclasses.field(default_factory=dict)
  orders: tuple[tuple[str, ...], ...] = ()
  outputs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  errors: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def median(self, name: str) -> float | None:
    """Median seconds of ``name`` (None if it has no times)."""
    return median(self.times.get(name, ()))

  def best(self, name: str) -> float | None:
    """Fastest repeat of ``name`` (None if it has no times)."""
    times = self.times.get(name, ())
    return min(times) if times else None

  def per_repeat(self, name: str, baseline: str | Sequence[str]) -> list[float]:
    """``time(name) / time(baseline)`` in each repeat.

    ``baseline`` may name several workloads: the fastest of them in that
    repeat is the denominator (those without times are passed over).
    """
    names = (baseline,) if isinstance(baseline, str) else tuple(baseline)
    bases = [self.times[b] for b in names if self.times.get(b)]
    if not self.times.get(name) or not bases:
      return []
    return [t / min(b) for t, *b in zip(self.times[name], *bases, strict=True)]

  def ratio(self, name: str, baseline: str | Sequence[str]) -> float | None:
    """The median over repeats of the per-repeat ratio ``time(name) / time(baseline)``.

    Not ``median(name) / median(baseline)``: both workloads of one repeat ran
    back to back under the same machine load, so their ratio cancels the load
    of that repeat; the median then discards the repeats a burst disturbed.
    A ratio of medians would pair times from different repeats.
    """
    return median(self.per_repeat(name, baseline))

  def scaled(self, name: str, factor: float) -> Timings:
    """These timings with ``name``'s times multiplied by ``factor`` (an extrapolation)."""
    times = {**self.times, name: tuple(t * factor for t in self.times.get(name, ()))}
    return dataclasses.replace(self, times=times)

  def rounded(self, digits: int = 4) -> dict[str, list[float]]:
    """The times as plain lists (for the JSON line)."""
    return {n: [round(t, digits) for t in ts] for n, ts in self.times.items()}


def interleave(
    workloads: Mapping[str, Callable[[], Any]],
    repeats: int,
    *,
    warmup: bool = True,
    optional: Collection[str] = (),
    clock: Clock = time.perf_counter,
    block: Callable[[Any], Any] = jax.block_until_ready,
) -> Timings:
  """Times each zero-argument workload ``repeats`` times, interleaved and rotated.

  Repeat ``r`` runs every workload once in the order ``rotation(names, r)``;
  each timing ends when ``block`` returns on the workload's output.

  Args:
    workloads: name -> zero-argument callable (its output is blocked on).
    repeats: timed calls per workload.
    warmup: first call each workload once, timed into ``warmup_s`` (skip it
      when the workloads were compiled ahead and a call is expensive).
    optional: workloads allowed to fail (e.g. out of memory): the error is
      recorded, their times are dropped and they are not run again. Any other
      workload's exception propagates.
    clock: seconds now (injectable for tests).
    block: waits for an output (injectable for tests).

  Returns:
    :class:`Timings`.
  """
  names = tuple(workloads)
  times = {n: [] for n in names}
  warmup_s, outputs, errors, orders = {}, {}, {}, []

  def timed(name):
    try:
      seconds, outputs[name] = time_call(workloads[name], clock=clock, block=block)
    except Exception as e:
      if name not in optional:
        raise
      errors[name] = short_error(e)
      return None
    return seconds

  if warmup:
    for name in names:
      seconds = timed(name)
      if seconds is not None:
        warmup_s[name] = seconds
  for r in range(repeats):
    order = tuple(n for n in rotation(names, r) if n not in errors)
    orders.append(order)
    for name in order:
      seconds = timed(name)
      if seconds is not None:
        times[name].append(seconds)
  final = {n: () if n in errors else tuple(ts) for n, ts in times.items()}
  return Timings(final, warmup_s, tuple(orders), outputs, errors)


def environment() -> dict[str, Any]:
  """The facts every result carries: backend, device count and kind, jax version."""
  return {
      "backend": jax.default_backend(),
      "device_count": jax.device_count(),
      "device_kind": jax.devices()[0].device_kind,
      "jax_version": jax.__version__,
  }


def describe_environment(env: Mapping[str, Any]) -> str:
  """``"jax 0.10.2, cpu, 1 x cpu"``: the :func:`environment` facts for a header line."""
  return (f"jax {env['jax_version']}, {env['backend']}, "
          f"{env['device_count']} x {env['device_kind']}")


def fmt(value: float | None, spec: str = ".3f", none: str = "-") -> str:
  """``format(value, spec)``, or ``none`` for a missing value."""
  return none if value is None else format(value, spec)


def goal(value: float | None, target: str) -> str:
  """``"(goal >=1.0: ok)"``: ``target`` is ``">="`` or ``"<="`` and a number."""
  if value is None:
    return f"(goal {target}: n/a)"
  op, bound = target[:2], float(target[2:])
  ok = value >= bound if op == ">=" else value <= bound
  return f"(goal {target}: {'ok' if ok else 'MISSED'})"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table: first column left-aligned, the others right-aligned."""
  cells = [[str(c) for c in row] for row in [headers, *rows]]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

  def line(row):
    first = f"{row[0]:<{widths[0]}}"
    return "  ".join([first] + [f"{c:>{w}}" for c, w in zip(row[1:], widths[1:], strict=True)])

  return "\n".join(line(row) for row in cells)


def ratio_table(
    timings: Timings, baseline: str, compile_s: Mapping[str, float], label: str = "workload"
) -> str:
  """One row per workload: median seconds, ratio to ``baseline``, compile seconds."""
  rows = [
      (n, fmt(timings.median(n)), fmt(timings.ratio(n, baseline), ".2f"),
       fmt(compile_s.get(n), ".1f"))
      for n in timings.times
  ]
  return table((label, "median s", f"vs {baseline}", "compile s"), rows)


def log(*args) -> None:
  """``print`` that flushes (progress lines show up while a long run goes on)."""
  print(*args, flush=True)


def emit_json(result: Mapping[str, Any]) -> dict[str, Any]:
  """Prints ``result`` as one JSON line; call it last, so it is the last line of stdout.

  Returns:
    ``result`` as a dict. Numpy and JAX scalars are written as floats.
  """
  print(json.dumps(dict(result), default=float), flush=True)
  return dict(result)
