"""R runs vectorized in one jit vs R runs one after another: the same work, side by side.

  PYTHONPATH=. python bench/many_runs.py                  # ~3 min on a 2-core CPU
  PYTHONPATH=. python bench/many_runs.py --quick          # tiny model, seconds
  PYTHONPATH=. python bench/many_runs.py --end-to-end     # + whole runs as processes

**Round** (always): R independent FedAvg rounds of K clients (S local steps of batch B,
the small CNN), each run with its own initial model and its own data. ``vectorized``:
one compiled ``jax.vmap`` of the round over a leading run axis (what
``--config.runs.seeds=R`` trains); ``sequential``: the single run's compiled round
called R times. Both compiled ahead, timed interleaved (``bench/harness.py``); the
ratio is sequential / vectorized (> 1: vectorizing is faster). Also checks that
the vectorized round equals the R single rounds (max abs difference of the params).

**End to end** (``--end-to-end``): a small synthetic PneumoniaMNIST run (cnn_tiny, few
rounds) for R seeds as (a) one ``launch/main.py --config.runs.seeds=R`` process, (b) R
processes one after another, (c) R processes two at a time; wall seconds including
imports, data, compiles, evaluation and checkpoints. Each variant gets its own empty
compilation cache (on, as by default): the processes after the first load the compiled
programs, as the runs of a sweep do. This is what ``fedjax-med-sweep
--vectorize_seeds`` decides between.

Last line: one JSON object; ``vectorized_vs_sequential`` is the round ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench import harness, workload  # noqa: E402
from fedjax_med import engine, tasks  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def round_ratio(model: str, runs: int, k: int, steps: int, batch: int, repeats: int) -> dict:
  """Times R single rounds vs one vectorized round of R runs (see the module docstring)."""
  eng = engine.choose(k)
  setup = workload.Setup(model, eng.conv_impl, eng.local_unroll)
  alg = setup.algorithm(eng.client_chunk_size)
  states = [alg.init(tasks.init_variables(setup.model, jax.random.key(r), setup.image_shape),
                     jax.random.key(100 + r)) for r in range(runs)]
  batches = [jax.device_put(workload.make_round_batch(k, steps, batch, seed=r))
             for r in range(runs)]
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)  # noqa: E731
  state_r, batch_r = stack(states), stack(batches)
  single, single_compile_s = harness.compile_ahead(alg.round, states[0], batches[0])
  vector, vector_compile_s = harness.compile_ahead(jax.vmap(alg.round), state_r, batch_r)

  # Same results: run r of the vectorized round is run r's single round.
  out_v, _ = vector(state_r, batch_r)
  diff = max(float(jnp.max(jnp.abs(a[r] - b))) for r in range(runs) for a, b in zip(
      jax.tree.leaves(out_v.params), jax.tree.leaves(single(states[r], batches[r])[0].params),
      strict=True))

  timings = harness.interleave({
      "sequential": lambda: [single(s, b) for s, b in zip(states, batches, strict=True)],
      "vectorized": lambda: vector(state_r, batch_r),
  }, repeats)
  return {
      "model": model, "runs": runs, "k": k, "steps": steps, "batch": batch,
      "engine_chunk": workload.chunk_name(eng.client_chunk_size),
      "sequential_s": timings.median("sequential"), "vectorized_s": timings.median("vectorized"),
      "vectorized_vs_sequential": timings.ratio("sequential", "vectorized"),
      "compile_single_s": single_compile_s, "compile_vectorized_s": vector_compile_s,
      "max_abs_param_diff": diff, "times": timings.rounded(),
  }


def _train_argv(workdir: str, data_root: str, rounds: int, extra: list[str]) -> list[str]:
  return [sys.executable, os.path.join(_REPO, "launch", "main.py"),
          "--config=configs/quickstart.py", f"--workdir={workdir}",
          f"--config.data.root={data_root}", "--config.data.download=False",
          "--config.data.verify_md5=False", "--config.model.name=cnn_tiny",
          f"--config.fl.rounds={rounds}", "--config.eval.every=5", "--config.log.progress=none",
          *extra]


def _wall(argvs: list[list[str]], jobs: int, env: dict) -> float:
  """Seconds to run every argv, ``jobs`` processes at a time; raises if one fails."""
  t0, pending, running = time.perf_counter(), list(argvs), []
  while pending or running:
    while pending and len(running) < jobs:
      running.append(subprocess.Popen(pending.pop(0), cwd=_REPO, env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))
    p = running.pop(0)
    _, err = p.communicate(timeout=1800)
    if p.returncode:
      raise RuntimeError(f"a run failed (exit {p.returncode}): {err.strip()[-500:]}")
  return time.perf_counter() - t0


def end_to_end(runs: int, rounds: int) -> dict:
  """Whole runs: one vectorized process vs R processes (1 and 2 at a time)."""
  from fedjax_med.data import synthetic

  env = {**os.environ, "PYTHONPATH": _REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
  with tempfile.TemporaryDirectory() as tmp:
    root = os.path.join(tmp, "data")
    synthetic.write_npz(os.path.join(root, "pneumoniamnist.npz"), name="pneumoniamnist",
                        n_train=2000, n_val=300, n_test=300)
    cache = lambda tag: f"--config.compile_cache={os.path.join(tmp, 'cache_' + tag)}"  # noqa: E731
    vec = _wall([_train_argv(os.path.join(tmp, "vec"), root, rounds,
                             [f"--config.runs.seeds={runs}", cache("vec")])], 1, env)
    singles = lambda tag: [_train_argv(os.path.join(tmp, f"{tag}{r}"), root, rounds,  # noqa: E731
                                       [f"--config.seed={r}", cache(tag)]) for r in range(runs)]
    one_at_a_time = _wall(singles("a"), 1, env)
    two_at_a_time = _wall(singles("b"), 2, env)
  return {"runs": runs, "rounds": rounds, "vectorized_process_s": vec,
          "processes_1_at_a_time_s": one_at_a_time, "processes_2_at_a_time_s": two_at_a_time,
          "vectorized_vs_processes_1": one_at_a_time / vec,
          "vectorized_vs_processes_2": two_at_a_time / vec}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="cnn")
  p.add_argument("--runs", type=int, default=4)
  p.add_argument("--k", type=int, default=8)
  p.add_argument("--local-steps", type=int, default=5)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--quick", action="store_true", help="cnn_tiny, K=4, S=2, B=8, 2 repeats")
  p.add_argument("--end-to-end", action="store_true", help="also whole runs as processes")
  p.add_argument("--e2e-rounds", type=int, default=10)
  args = p.parse_args(argv)
  if args.quick:
    args.model, args.k, args.local_steps, args.batch_size, args.repeats = "cnn_tiny", 4, 2, 8, 2
  env = harness.environment()
  harness.log(harness.describe_environment(env))
  res = round_ratio(args.model, args.runs, args.k, args.local_steps, args.batch_size,
                    args.repeats)
  harness.log(harness.table(
      ["model", "R", "K", "sequential s", "vectorized s", "seq / vec", "max |diff|"],
      [[res["model"], res["runs"], res["k"], harness.fmt(res["sequential_s"]),
        harness.fmt(res["vectorized_s"]), harness.fmt(res["vectorized_vs_sequential"], ".2f"),
        f"{res['max_abs_param_diff']:.1e}"]]))
  out = {**env, "round": res, "vectorized_vs_sequential": res["vectorized_vs_sequential"]}
  if args.end_to_end:
    e2e = end_to_end(args.runs, args.e2e_rounds)
    harness.log(json.dumps(e2e, indent=1))
    out["end_to_end"] = e2e
  return harness.emit_json(out)


if __name__ == "__main__":
  main()
