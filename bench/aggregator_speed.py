"""Round time of every aggregator relative to the mean, and the memory of the stacked deltas.

  python bench/aggregator_speed.py            # K in {16, 64}, small CNN (a few minutes on 2 cores)
  python bench/aggregator_speed.py --quick    # cnn_tiny, K in {4, 8}, tiny shapes, ~1 min

For each K, one FedAvg round (S local steps of B examples per client, a model
of the zoo, the engine's default chunk / conv lowering / unroll for this
backend) with each aggregator of ``algorithms.aggregators`` (hyper-parameters
at their ``DEFAULTS``), and, apart from the round, the aggregator alone on
given stacked deltas ``[K, params]`` (what it adds to a round, without the
clients' training that dominates it on a CPU). ``mean`` streams the weighted
sum over the client chunks; every other aggregator holds the stacked deltas,
``K x params x 4`` bytes (``aggregators.stacked_delta_bytes``, printed), and
XLA's own account of the compiled round's temporary memory is printed next to
it. Every workload is compiled ahead and timed by ``bench/harness.py``:
interleaved repeat by repeat, order rotated; ratios are medians of per-repeat
ratios. Prints a table per K and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench import harness, workload  # noqa: E402
from fedjax_med import algorithms, engine  # noqa: E402
from fedjax_med.algorithms import aggregators  # noqa: E402

NAMES = tuple(n for n in aggregators.AGGREGATORS if n != "stacked_mean")


def temp_bytes(compiled) -> int | None:
  """XLA's temporary buffer bytes of a compiled function (None where the backend does not say)."""
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend / version reports it
    return None


def stacked_deltas(params, k: int, seed: int = 0):
  """Random ``[K, ...]`` deltas shaped like ``params`` and ``[K]`` weights (one padding client)."""
  rng = np.random.default_rng(seed)
  deltas = jax.tree.map(lambda x: rng.normal(scale=1e-2, size=(k,) + x.shape).astype(np.float32),
                        params)
  weights = rng.integers(50, 500, size=k).astype(np.float32)
  weights[-1] = 0.0
  return deltas, weights


def measure(setup: workload.Setup, k: int, steps: int, batch: int, repeats: int) -> dict:
  eng = engine.choose(k)
  data = jax.device_put(workload.make_round_batch(k, steps, batch))
  deltas, weights = jax.device_put(stacked_deltas(setup.params, k))
  shapes = jax.eval_shape(lambda: setup.params)
  runs, compile_s, memory, temp = {}, {}, {}, {}
  for name in NAMES:
    agg = aggregators.get(name, **aggregators.DEFAULTS)
    plan = algorithms.RoundPlan(chunk_size=eng.client_chunk_size, unroll=eng.local_unroll,
                                aggregator=agg)
    alg = algorithms.fedavg(setup.loss_fn, setup.client_tx, setup.server_tx, plan=plan)
    state = alg.init(setup.params, jax.random.key(1))
    fn, compile_s[name] = harness.compile_ahead(alg.round, state, data)
    runs[name] = lambda fn=fn, state=state: fn(state, data)
    temp[name] = temp_bytes(fn)
    memory[name] = aggregators.stacked_delta_bytes(agg, k, shapes)
    # The aggregator alone; the mean from the stack (the round streams it: no stack at all).
    alone = aggregators.stacked_mean() if agg.streaming else agg
    afn, compile_s[f"{name}_alone"] = harness.compile_ahead(alone.aggregate, deltas, weights)
    runs[f"{name}_alone"] = lambda afn=afn: afn(deltas, weights)
  timings = harness.interleave(runs, repeats, warmup=False)
  rows = []
  for name in NAMES:
    rows.append((name, harness.fmt(timings.median(name)),
                 harness.fmt(timings.ratio(name, "mean"), ".2f"),
                 harness.fmt(timings.median(f"{name}_alone"), ".4f"),
                 harness.fmt(timings.ratio(f"{name}_alone", "mean_alone"), ".1f"),
                 f"{memory[name] / 2**20:.1f}",
                 "-" if temp[name] is None else f"{temp[name] / 2**20:.1f}",
                 harness.fmt(compile_s[name], ".1f")))
  harness.log(
      f"\nK={k} S={steps} B={batch} chunk={workload.chunk_name(eng.client_chunk_size)} "
      f"conv={eng.conv_impl}\n"
      + harness.table(("aggregator", "round s", "vs mean", "alone s", "alone vs mean",
                       "stacked MiB", "XLA temp MiB", "compile s"), rows))
  return {
      "round_vs_mean": {n: round(timings.ratio(n, "mean"), 3) for n in NAMES if n != "mean"},
      "alone_vs_mean": {n: round(timings.ratio(f"{n}_alone", "mean_alone"), 3)
                        for n in NAMES if n != "mean"},
      "stacked_delta_bytes": memory,
      "xla_temp_bytes": temp,
      "seconds": {n: round(timings.median(n), 5) for n in runs},
      "chunk": workload.chunk_name(eng.client_chunk_size),
  }


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = p.add_argument
  add("--model", default=None, help="default cnn (--quick: cnn_tiny)")
  add("--k", default=None, help="clients per round, comma-separated (default 16,64)")
  add("--steps", type=int, default=2, help="local steps")
  add("--batch", type=int, default=16, help="examples per step")
  add("--repeats", type=int, default=3, help="interleaved repeats")
  add("--quick", action="store_true", help="cnn_tiny, K in {4, 8}, S=1, B=4, 1 repeat")
  return p


def main(argv=None) -> dict:
  args = build_parser().parse_args(argv)
  if args.quick:
    args.model = args.model or "cnn_tiny"
    args.k = args.k or "4,8"
    args.steps, args.batch, args.repeats = 1, 4, 1
  args.model = args.model or "cnn"
  ks = [int(k) for k in (args.k or "16,64").split(",")]
  env = harness.environment()
  harness.log(f"model={args.model} repeats={args.repeats}; {harness.describe_environment(env)}")
  results = {}
  for k in ks:
    eng = engine.choose(k)
    setup = workload.Setup(args.model, eng.conv_impl, eng.local_unroll)
    results[str(k)] = measure(setup, k, args.steps, args.batch, args.repeats)
  return harness.emit_json({"model": args.model, "steps": args.steps, "batch": args.batch,
                            "repeats": args.repeats, "by_k": results, **env})


if __name__ == "__main__":
  main()
