"""The cost of the architecture choice: params, FLOPs and round speed per model.

  PYTHONPATH=. python bench/zoo.py                 # 28 px zoo, ~10 min on 2 CPU cores
  PYTHONPATH=. python bench/zoo.py --models cnn,vit_mu --k 2 --steps 1 --batch 2   # smoke
  PYTHONPATH=. python bench/zoo.py --depth 28      # the 3D models on 28^3 volumes
  PYTHONPATH=. python bench/zoo.py --depth 28 --models cnn3d --k 16 --steps 5 --batch 32

For each model at 28 px (1 channel, 2 classes): trainable parameters,
FLOPs per example (XLA's count of one eval forward pass), and the one-jit
FedAvg round measured side by side with the per-client loop of jitted local
updates and with centralized steps on the same samples (``round_speed.measure``:
interleaved repeats, medians of per-repeat ratios, ``bench/harness.py``). Small
K, S and B by default so that the large models (ViT-S, ConvNeXt, ResNet-18/50)
fit a CPU run. Prints a markdown table and, last, one JSON line.

``--depth D`` measures the 3D models (default ``cnn3d,resnet18_3d``) on
synthetic AdrenalMNIST3D-sized volumes ``[D, size, size, 1]``, 2 classes, and
adds the working memory of the compiled round at ``--mem-k`` clients
(``bench/memory.py``: ``memory_analysis()`` of the round lowered on shapes, so
K=16 costs a compile, not a run). A ``cnn3d`` round at K=16, S=5, B=32 on 28^3
has a goal of <= 10 s on 2 CPU cores.

``--clock cpu`` times the rounds in CPU seconds of this process (all threads)
instead of wall seconds: on a machine shared with other jobs (nice, a sweep)
the wall time measures the neighbours; the CPU seconds bound the wall time of
the same round on idle cores from above (XLA:CPU runs at most one thread per
core, so wall <= CPU seconds when nothing else runs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness, memory, round_speed, workload  # noqa: E402
from fedjax_med.models import __main__ as zoo_table  # noqa: E402

DEFAULT_MODELS = (
    "cnn,resnet8_bn,resnet8_gn,resnet8_ln,resnet18,vit_ti,vit_s,convnext_atto,convnext_femto"
)
DEFAULT_MODELS_3D = "cnn3d,resnet18_3d"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
# The quickstart-sized 3D round and its goal on 2 CPU cores (issue 18).
GOAL_3D = {"model": "cnn3d", "k": 16, "steps": 5, "batch": 32, "shape": (28, 28, 28, 1),
           "goal": "<=10"}


def _memory(setup: workload.Setup, k: int, steps: int, batch: int, chunk) -> dict:
  """Temp / argument MiB of the compiled round at K=k (``bench/memory.py``), or the error."""
  try:
    m = memory.round_memory(setup, [k], steps, batch, chunk)
  except Exception as e:  # e.g. out of memory while compiling
    return {"error": harness.short_error(e)}
  return {key: m[str(k)][key] for key in ("temp_mib", "argument_mib")} if str(k) in m else m


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=None,
                 help=f"comma list (default {DEFAULT_MODELS}; with --depth {DEFAULT_MODELS_3D})")
  p.add_argument("--size", type=int, default=workload.IMAGE_SHAPE[0], help="input side")
  p.add_argument("--depth", type=int, default=0, help="volume depth: measure 3D models")
  p.add_argument("--k", type=int, default=4, help="clients per round")
  p.add_argument("--steps", type=int, default=2, help="local steps")
  p.add_argument("--batch", type=int, default=16, help="examples per step")
  p.add_argument("--chunk", default="1", help="client chunk ('all' or an int)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--conv-impl", default="auto")
  p.add_argument("--clock", default="wall", choices=tuple(CLOCKS),
                 help="wall seconds, or this process's CPU seconds (steadier when shared)")
  p.add_argument("--mem-k", type=int, default=16,
                 help="clients of the round whose memory is reported (0 = skip)")
  args = p.parse_args(argv)
  chunk = None if args.chunk == "all" else int(args.chunk)
  names = (args.models or (DEFAULT_MODELS_3D if args.depth else DEFAULT_MODELS)).split(",")
  shape = ((args.depth,) if args.depth else ()) + (args.size, args.size, 1)
  table = {n: (params, flops) for n, _, params, flops in zoo_table.zoo_rows(
      names, args.size, 1, workload.NUM_CLASSES, "native", args.depth)}
  rows = []
  harness.log(f"input {'x'.join(map(str, shape))}, K={args.k} S={args.steps} B={args.batch} "
              f"chunk={args.chunk} repeats={args.repeats} clock={args.clock}; "
              f"{harness.describe_environment(harness.environment())}")
  harness.log("| model | params | MFLOPs/example | one-jit round s | loop s | vs_loop | vs_central "
              f"| compile s | temp MiB at K={args.mem_k} | inputs MiB at K={args.mem_k} |")
  harness.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for name in names:
    t = time.perf_counter()
    setup = workload.Setup(name, args.conv_impl, 1, image_shape=shape)
    r = round_speed.measure(setup, args.k, args.steps, args.batch, chunk, args.repeats,
                            loop_max_clients=args.k, clock=CLOCKS[args.clock])
    mem = _memory(setup, args.mem_k, args.steps, args.batch, chunk) if args.mem_k else {}
    params, flops = table[name]
    keys = ("one_jit_s", "loop_s", "central_s", "vs_loop", "vs_central", "compile_s")
    row = {"model": name, "params": params, "mflops": flops / 1e6, **{k: r[k] for k in keys},
           "mem_k": args.mem_k, **{f"mem_{k}": v for k, v in mem.items()}}
    goal = (name, args.k, args.steps, args.batch, shape) == tuple(
        GOAL_3D[k] for k in ("model", "k", "steps", "batch", "shape"))
    if goal:
      row["goal"] = harness.goal(r["one_jit_s"], GOAL_3D["goal"])
    rows.append(row)
    f = harness.fmt
    harness.log(f"| {name} | {params:,} | {flops / 1e6:,.1f} | {f(r['one_jit_s'])} | "
                f"{f(r['loop_s'])} | {f(r['vs_loop'], '.2f')} | {f(r['vs_central'], '.2f')} | "
                f"{f(r['compile_s'], '.1f')} | {f(mem.get('temp_mib'), '.1f')} | "
                f"{f(mem.get('argument_mib'), '.1f')} |  "
                f"<!-- {time.perf_counter() - t:.0f} s{'; one-jit ' + row['goal'] if goal else ''} -->")
  return harness.emit_json({"k": args.k, "steps": args.steps, "batch": args.batch,
                            "chunk": args.chunk, "repeats": args.repeats, "clock": args.clock,
                            "image_shape": list(shape), "models": rows, **harness.environment()})


if __name__ == "__main__":
  main()
