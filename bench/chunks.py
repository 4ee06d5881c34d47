"""Chunk tuning: which ``client_chunk_size`` runs the one-jit round fastest at K clients.

The round vectorizes ``chunk`` clients together and scans over the chunks, so
memory follows the chunk; speed depends on the backend (on XLA:CPU chunk 1
wins: vmapped clients run as batched matmuls that are slower per client than
plain ones; on a GPU larger chunks fill the device). Each candidate's round is
compiled, then all are timed interleaved; the fastest warm round wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from bench import harness, workload


def tune(setup: workload.Setup, k: int, steps: int, batch: int,
         candidates: Sequence[int | None], repeats: int):
  """The warm round at K=k per chunk candidate (interleaved; best of ``repeats``).

  A candidate >= k runs all clients at once here but keeps its value, so a
  larger K later still runs in chunks of that size. A candidate that fails to
  compile or run (e.g. out of memory on an accelerator) is reported and dropped.

  Returns:
    ``(rows, best row, compiled round of the best)``; a row is
    ``{"chunk", "compile_s", "round_s"}``.
  """
  dev = jax.device_put(workload.make_round_batch(k, steps, batch, image_shape=setup.image_shape))
  state = setup.state()
  compiled, rows = {}, {}
  for chunk in candidates:
    name = workload.run_chunk(chunk, k)
    if name in rows:
      continue
    try:
      compiled[name], compile_s = setup.compile_round(chunk, state, dev)
    except Exception as e:
      harness.log(f"  chunk {workload.chunk_name(chunk)}: no compile: {harness.short_error(e)}")
      continue
    rows[name] = {"chunk": chunk, "compile_s": compile_s}
  t = harness.interleave({n: lambda f=f: f(state, dev) for n, f in compiled.items()}, repeats,
                         warmup=False, optional=compiled)
  for name, error in t.errors.items():
    harness.log(f"  chunk {name}: failed: {error}")
  rows = [dict(row, round_s=t.best(n)) for n, row in rows.items() if t.best(n) is not None]
  best = min(rows, key=lambda row: row["round_s"])
  return rows, best, compiled[workload.run_chunk(best["chunk"], k)]


def describe(rows: Sequence[dict], k: int, best: int | None) -> str:
  """The tuning table (chunks as names) and the winner."""
  return (
    f"chunk tuning at K={k} (warm round s, best of the repeats):\n"
    + harness.table(("chunk", "round s", "ms/client", "compile s"), [
      (r["chunk"], harness.fmt(r["round_s"]), harness.fmt(1000 * r["round_s"] / k, ".1f"),
       harness.fmt(r["compile_s"], ".1f")) for r in rows])
    + f"\n  best: chunk {workload.chunk_name(best)}"
  )
