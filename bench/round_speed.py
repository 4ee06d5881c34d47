"""Round speed: the one-jit FedAvg round vs a per-client loop vs centralized SGD.

  python bench/round_speed.py            # ~6-8 min on an idle 2-core CPU (10 min under load)
  python bench/round_speed.py --quick    # ~1 min smoke run (cnn, K=8)
  python bench/round_speed.py --large    # + 1,000 of 10,000 clients: host batching vs round
  bash bench/gpu.sh                      # the prepared GPU run (K up to 4096)

For each model and each K (clients per round), on synthetic uint8 28x28 gray
images (2 classes), S local steps of batch B, the three variants of
``bench/workload.py`` (``one_jit``, ``loop``, ``central``) do the same work and
are timed by ``bench/harness.py``: interleaved repeat by repeat, order rotated,
warm (compiled ahead; compile seconds reported apart). For large K the loop
times the first ``--loop-max-clients`` clients and scales linearly (``*``).
Ratios are medians of per-repeat ratios: ``vs_loop = loop / one_jit``,
``vs_central = one_jit / min(central, loop)``.

The chunk (``client_chunk_size``) is tuned per model first (``--chunk auto``):
the warm round at K=``--tune-k`` for each ``--chunk-candidates``; the fastest
is used for every K of that model. On CPU resnet* runs only K <= 16
(``--resnet-max-k``). Also reported: ``peak_mem_ratio`` (``bench/memory.py``),
the quickstart's ``time_to_first_round_s`` cold and warm (an empty, then a filled
persistent compilation cache; ``--quickstart-rounds 20`` times a whole short run;
``bench/first_round.py``) and, with
``--large``, ``bench/cohort.py``. The last line is one JSON object (headline
keys for the first model).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench import chunks, cohort, first_round, harness, memory, workload  # noqa: E402
from bench.workload import Setup  # noqa: E402
from fedjax_med import models  # noqa: E402

_HEADERS = ("model", "K", "chunk", "one_jit s", "loop s", "central s", "vs_loop", "vs_central",
            "thr/central", "one_jit smp/s", "central smp/s", "compile s")


def measure(setup: Setup, k: int, steps: int, batch: int, chunk, repeats: int,
            loop_max_clients: int, compiled_round=None, round_compile_s=None,
            clock: harness.Clock = time.perf_counter) -> dict:
  """Interleaved one_jit / loop / central timings for one (model, K).

  ``clock`` times the runs: wall seconds by default; ``time.process_time`` gives
  this process's CPU seconds (all threads), steadier on a shared machine.
  """
  host = workload.make_round_batch(k, steps, batch, image_shape=setup.image_shape)
  dev = jax.device_put(host)
  state = setup.state()
  if compiled_round is None:
    compiled_round, round_compile_s = setup.compile_round(chunk, state, dev)
  loop_run, n_loop = setup.make_loop(state, host, loop_max_clients)
  res = {"k": k, "chunk": workload.run_chunk(chunk, k),
         "samples": k * steps * batch, "compile_s": round_compile_s,
         "loop_clients_timed": n_loop, "loop_extrapolated": n_loop < k}
  runs = {"one_jit": lambda: compiled_round(state, dev), "loop": loop_run}
  try:
    runs["central"], res["central_compile_s"] = setup.make_central(host)
  except Exception as e:  # e.g. out of memory at batch K*B on an accelerator
    res["central_error"] = harness.short_error(e)
  # No warm-up calls (all compiled ahead; the median absorbs first-touch costs):
  # at the largest K they would cost minutes.
  t = harness.interleave(runs, repeats, warmup=False, optional=("central",), clock=clock)
  res.update({f"{n}_error": e for n, e in t.errors.items()})
  if n_loop == k:  # the loop computes the same round: check it
    pairs = zip(jax.tree.leaves(t.outputs["loop"].params),
                jax.tree.leaves(t.outputs["one_jit"][0].params), strict=True)
    res["loop_vs_one_jit_max_abs_diff"] = max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
  t = t.scaled("loop", k / n_loop)
  res.update(one_jit_s=t.median("one_jit"), loop_s=t.median("loop"),
             central_s=t.median("central"), vs_loop=t.ratio("loop", "one_jit"),
             vs_central=t.ratio("one_jit", ("central", "loop")))
  for name in ("one_jit", "loop", "central"):
    if res[f"{name}_s"] is not None:
      res[f"{name}_samples_per_s"] = res["samples"] / res[f"{name}_s"]
  if res["central_s"] is not None:
    res["throughput_vs_central"] = t.ratio("central", "one_jit")
  res["times"] = t.rounded()
  return res


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  add = p.add_argument
  add("--quick", action="store_true", help="~1 min smoke run: cnn, K=8, chunk candidates 1,4,all")
  add("--models", default=None, help="comma list (default cnn,resnet8_gn)")
  add("--ks", default=None, help="clients per round, comma list (default 16,64,256)")
  add("--resnet-max-k", type=int, default=None,
      help="largest K for resnet* (default 16 on CPU; 0 = no limit, the default elsewhere)")
  add("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
  add("--chunk", default="auto", help="client_chunk_size: auto (tuned per model), all, or an int")
  add("--chunk-candidates", default=None,
      help="for auto (default 1,4,8,all on CPU; 128,256,512,1024 otherwise)")
  add("--tune-k", type=int, default=None, help="K for auto (default 16 on CPU, 1024 otherwise)")
  add("--local-steps", type=int, default=5)
  add("--batch-size", type=int, default=32)
  add("--conv-impl", default="auto", choices=models.layers.IMPLS)
  add("--unroll", type=int, default=1, help="lax.scan unroll of the local steps")
  add("--loop-max-clients", type=int, default=None,
      help="time at most this many loop clients, extrapolate (default 64 on CPU, 256 otherwise)")
  add("--mem-ks", default=None, help="K pair for peak_mem_ratio (default: memory.default_ks)")
  add("--budget-s", type=float, default=0,
      help="skip the remaining (model, K) cells once this many seconds have passed (0 = none)")
  add("--skip-quickstart", action="store_true")
  add("--quickstart-rounds", type=int, default=1,
      help="rounds of the cold and warm quickstart processes (20: a whole short run)")
  add("--skip-memory", action="store_true")
  add("--large", action="store_true", help="also time 1,000 of 10,000 clients (bench/cohort.py)")
  return p


def _ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x.strip()]


def _chunk_arg(text: str) -> int | None:
  return None if text in ("all", "none", "0") else int(text)


def _resolve(args):
  cpu = jax.default_backend() == "cpu"
  if args.quick:
    args.models, args.ks = args.models or "cnn", args.ks or "8"
    args.chunk_candidates, args.tune_k = args.chunk_candidates or "1,4,all", args.tune_k or 8
  args.models = (args.models or "cnn,resnet8_gn").split(",")
  args.ks = _ints(args.ks or "16,64,256")
  args.tune_k = args.tune_k or (16 if cpu else 1024)
  args.resnet_max_k = (16 if cpu else 0) if args.resnet_max_k is None else args.resnet_max_k
  args.loop_max_clients = args.loop_max_clients or (64 if cpu else 256)
  cands = args.chunk_candidates or ("1,4,8,all" if cpu else "128,256,512,1024")
  args.chunk_candidates = [_chunk_arg(c) for c in cands.split(",")]
  args.mem_ks = _ints(args.mem_ks) if args.mem_ks else None
  return args


def _row(model, k, r) -> tuple:
  f = harness.fmt
  return (model, k, r["chunk"], f(r["one_jit_s"]), f(r["loop_s"]) + "*" * r["loop_extrapolated"],
          f(r.get("central_s")), f(r["vs_loop"], ".2f"), f(r["vs_central"], ".2f"),
          f(r.get("throughput_vs_central"), ".2f"), f(r["one_jit_samples_per_s"], ".0f"),
          f(r.get("central_samples_per_s"), ".0f"), f(r["compile_s"], ".1f"))


def _model_results(args, model: str, t_total: float) -> tuple[dict, dict, list, dict]:
  """(results by K, memory, chunk tuning rows, chosen chunk) of one model."""
  setup, pre, tuning = Setup(model, args.conv_impl, args.unroll), {}, []
  chunk = _chunk_arg(args.chunk) if args.chunk != "auto" else None
  if args.chunk == "auto":
    rows, best, compiled = chunks.tune(setup, args.tune_k, args.local_steps, args.batch_size,
                                       args.chunk_candidates, repeats=2)
    chunk, pre[args.tune_k] = best["chunk"], (compiled, best["compile_s"])
    tuning = [dict(r, chunk=workload.chunk_name(r["chunk"])) for r in rows]
    harness.log(f"\n[{model}] " + chunks.describe(tuning, args.tune_k, chunk))
  results = {}
  for k in [k for k in args.ks if not (model.startswith("resnet") and args.resnet_max_k
                                       and k > args.resnet_max_k)]:
    if args.budget_s and time.perf_counter() - t_total > args.budget_s:
      results[str(k)] = {"k": k, "error": f"skipped: --budget-s {args.budget_s:.0f} spent"}
      continue
    try:
      results[str(k)] = measure(setup, k, args.local_steps, args.batch_size, chunk, args.repeats,
                                args.loop_max_clients, *pre.get(k, (None, None)))
    except Exception as e:  # keep going: e.g. out of memory at the largest K
      results[str(k)] = {"k": k, "error": harness.short_error(e)}
    r = results[str(k)]
    harness.log(f"[{model}] K={k}: " + (r.get("error") or ", ".join(
      f"{n} {harness.fmt(r[n + '_s'])} s" for n in ("one_jit", "loop", "central"))))
  mem = {}
  if not args.skip_memory:
    try:
      mem = memory.round_memory(setup, args.mem_ks or memory.default_ks(chunk), args.local_steps,
                                args.batch_size, chunk)
    except Exception as e:
      mem = {"method": "failed", "error": harness.short_error(e)}
  return results, mem, tuning, chunk


def main(argv=None) -> dict:
  args = _resolve(build_parser().parse_args(argv))
  t_total, env = time.perf_counter(), harness.environment()
  out = {**env, "local_steps": args.local_steps, "batch_size": args.batch_size,
         "repeats": args.repeats, "conv_impl": models.layers.resolve_impl(args.conv_impl)}
  harness.log(f"{harness.describe_environment(env)}, conv/pool {out['conv_impl']}; models "
              f"{args.models}, K {args.ks} (resnet* K <= {args.resnet_max_k or 'any'}), "
              f"S={args.local_steps}, B={args.batch_size}")
  results, mem, tuning, chunk_of = {}, {}, {}, {}
  for model in args.models:
    results[model], mem[model], tuning[model], chunk_of[model] = _model_results(args, model,
                                                                              t_total)
  harness.log(f"\nRound time, warm, median of {args.repeats} interleaved repeats\n" + harness.table(
    _HEADERS, [_row(m, k, r) if "error" not in r else (m, k, r["error"]) + ("",) * 9
               for m, by_k in results.items() for k, r in by_k.items()]))
  harness.log(f"  * loop timed on the first {args.loop_max_clients} clients, extrapolated to K;"
              " thr/central = central s / one_jit s (samples/s ratio)")
  if not args.skip_memory:
    harness.log("\nRound working memory (memory_analysis, same chunk):\n"
                + "\n".join(memory.describe(m, v) for m, v in mem.items()))
  head = args.models[0]  # headline numbers: the first model (the small CNN by default)
  if args.large:
    out["large"] = cohort.large_cohort(Setup(head, args.conv_impl, args.unroll), chunk_of[head],
                                       args.repeats)
    harness.log("\n" + cohort.describe(out["large"]))
  qs = ({"skipped": "--skip-quickstart"} if args.skip_quickstart
        else first_round.first_round(rounds=args.quickstart_rounds))
  harness.log("\n" + first_round.describe(qs))
  ref, hmem = results[head].get("64", {}), mem.get(head, {})
  out.update(model=head, vs_loop_k64=ref.get("vs_loop"), vs_central_k64=ref.get("vs_central"),
             peak_mem_ratio=hmem.get("temp_ratio"),
             peak_mem_argument_ratio=hmem.get("argument_ratio"), peak_mem_ks=hmem.get("ks"),
             time_to_first_round_s=qs.get("time_to_first_round_s"),
             time_to_first_round_s_warm=qs.get("time_to_first_round_s_warm"), quickstart=qs,
             chunk={m: workload.chunk_name(c) for m, c in chunk_of.items()}, chunk_tuning=tuning,
             tune_k=args.tune_k if args.chunk == "auto" else None,
             loop_max_clients=args.loop_max_clients)
  for model, by_k in results.items():
    for k, r in by_k.items():
      for key in ("one_jit_s", "loop_s", "central_s", "vs_loop", "vs_central",
                  "throughput_vs_central", "compile_s"):
        out[f"{key}_{model}_k{k}"] = r.get(key)
  goals = [("vs_loop", "64", ">=1.0")] if env["backend"] == "cpu" else [
    ("vs_loop", "256", ">=10"), ("vs_loop", "1024", ">=30")] + [
    ("throughput_vs_central", k, ">=0.7") for k in results[head]]
  goals += [("vs_central", "64", "<=1.1")]
  harness.log(f"\nGoals ({env['backend']}, {head}):\n" + "\n".join(
    f"  {key} at K={k} {harness.fmt(results[head].get(k, {}).get(key), '.2f')} "
    f"{harness.goal(results[head].get(k, {}).get(key), g)}" for key, k, g in goals)
    + f"\n  peak_mem_ratio {harness.fmt(out['peak_mem_ratio'], '.2f')} "
    f"{harness.goal(out['peak_mem_ratio'], '<=1.2')}")
  out.update(results=results, memory=mem, total_s=time.perf_counter() - t_total)
  harness.log(f"total {out['total_s']:.0f} s")
  return harness.emit_json(out)


if __name__ == "__main__":
  main()
