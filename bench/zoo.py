"""The cost of the architecture choice: params, FLOPs and round speed per model.

  PYTHONPATH=. python bench/zoo.py                 # 28 px zoo, ~10 min on 2 CPU cores
  PYTHONPATH=. python bench/zoo.py --models cnn,vit_mu --k 2 --steps 1 --batch 2   # smoke

For each model at 28 px (1 channel, 2 classes): trainable parameters,
FLOPs per example (XLA's count of one eval forward pass), and the one-jit
FedAvg round measured side by side with the per-client loop of jitted local
updates and with centralized steps on the same samples (``round_speed.measure``:
interleaved repeats, medians of per-repeat ratios, ``bench/harness.py``). Small
K, S and B by default so that the large models (ViT-S, ConvNeXt, ResNet-18/50)
fit a CPU run. Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import harness, round_speed, workload  # noqa: E402
from fedjax_med.models import __main__ as zoo_table  # noqa: E402

DEFAULT_MODELS = (
    "cnn,resnet8_bn,resnet8_gn,resnet8_ln,resnet18,vit_ti,vit_s,convnext_atto,convnext_femto"
)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default=DEFAULT_MODELS)
  p.add_argument("--k", type=int, default=4, help="clients per round")
  p.add_argument("--steps", type=int, default=2, help="local steps")
  p.add_argument("--batch", type=int, default=16, help="examples per step")
  p.add_argument("--chunk", default="1", help="client chunk ('all' or an int)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--conv-impl", default="auto")
  args = p.parse_args(argv)
  chunk = None if args.chunk == "all" else int(args.chunk)
  names = args.models.split(",")
  table = {n: (params, flops) for n, _, params, flops in zoo_table.zoo_rows(
      names, workload.IMAGE_SHAPE[0], workload.IMAGE_SHAPE[2], workload.NUM_CLASSES, "native")}
  rows = []
  harness.log(f"K={args.k} S={args.steps} B={args.batch} chunk={args.chunk} "
              f"repeats={args.repeats}; {harness.describe_environment(harness.environment())}")
  harness.log("| model | params | MFLOPs/example | one-jit round s | vs_loop | vs_central "
              "| compile s |")
  harness.log("|---|---:|---:|---:|---:|---:|---:|")
  for name in names:
    t = time.perf_counter()
    setup = workload.Setup(name, args.conv_impl, 1)
    r = round_speed.measure(setup, args.k, args.steps, args.batch, chunk, args.repeats,
                            loop_max_clients=args.k)
    params, flops = table[name]
    keys = ("one_jit_s", "loop_s", "central_s", "vs_loop", "vs_central", "compile_s")
    rows.append({"model": name, "params": params, "mflops": flops / 1e6, **{k: r[k] for k in keys}})
    harness.log(f"| {name} | {params:,} | {flops / 1e6:,.1f} | {r['one_jit_s']:.3f} | "
                f"{r['vs_loop']:.2f} | {r['vs_central']:.2f} | {r['compile_s']:.1f} |  "
                f"<!-- {time.perf_counter() - t:.0f} s -->")
  return harness.emit_json({"k": args.k, "steps": args.steps, "batch": args.batch,
                            "chunk": args.chunk, "repeats": args.repeats, "models": rows,
                            **harness.environment()})


if __name__ == "__main__":
  main()
