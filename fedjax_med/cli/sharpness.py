"""Sharpness of a trained run: lambda_max, top-k, Hessian trace, epsilon- and m-sharpness.

  fedjax-med-sharpness --workdir=runs/qs [--checkpoint=ROUND] [--examples=1000] \
      [--lanczos_iters=20] [--probes=100] [--eps=1e-3] [--m=128] [--rho=0.05]

Rebuilds model and data from ``RUN/config.json``, restores the checkpoint
(default: the latest), takes a seeded subset of a split (default train; BatchNorm
in eval mode) and writes ``RUN/analysis/sharpness.json`` (``--output`` to
change), plus ``density.png`` with ``--density_order``. A missing workdir,
config or checkpoint exits with code 2 and one message.

In a clone also ``python analysis/sharpness.py``. It logs "compiling NAME..." and the
compile time of each compiled function, then its progress per measure: a tqdm
bar on a terminal, else a log line every ~10 % with s/step and ETA (``--progress``).
"""

from __future__ import annotations

import argparse
import os
import sys

from fedjax_med.cli import logs
from fedjax_med.cli.args import flag as _flag


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _flag(p, "workdir", required=True, help="training run directory")
  _flag(p, "checkpoint", type=int, default=None, help="checkpoint round (default: latest)")
  _flag(p, "examples", type=int, default=1000, help="size of the seeded evaluation subset")
  _flag(p, "split", default="train", choices=("train", "val", "test"))
  _flag(p, "seed", type=int, default=0, help="subset and probe seed")
  _flag(p, "batch_size", type=int, default=250, help="examples per loss batch (memory)")
  _flag(p, "lanczos_iters", type=int, default=20, help="Lanczos order (0: skip)")
  _flag(p, "lanczos_tol", type=float, default=0.0,
        help="> 0: stop Lanczos once lambda_max changes by <= tol (relative) in a step")
  _flag(p, "top_k", type=int, default=5)
  _flag(p, "probes", type=int, default=100, help="Hutchinson probes (0: skip)")
  _flag(p, "probe_batch_size", type=int, default=1)
  _flag(p, "eps", type=float, default=1e-3, help="Keskar epsilon (0: skip)")
  _flag(p, "eps_norm", default="linf", choices=("linf", "l2"))
  _flag(p, "eps_steps", type=int, default=10)
  _flag(p, "m", type=int, default=128, help="m-sharpness batch size (0: skip)")
  _flag(p, "rho", type=float, default=0.05)
  _flag(p, "m_steps", type=int, default=1)
  _flag(p, "density_order", type=int, default=0, help="eigenvalue density SLQ order (0: skip)")
  _flag(p, "density_runs", type=int, default=3)
  _flag(p, "output", default="", help="JSON path (default RUN/analysis/sharpness.json)")
  _flag(p, "progress", default="auto", choices=("auto", "bar", "lines", "none"),
        help="auto: a bar on a terminal, else a log line every ~10%% with s/step and ETA")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  logs.setup_logging()
  import jax

  from fedjax_med import errors, metrics, progress
  from fedjax_med.analysis import measures, plots, runs

  try:
    run = runs.open_run(args.workdir)
    round_idx, variables = runs.restore(run, args.checkpoint)
    images, labels = runs.eval_subset(run.dataset, args.split, args.examples, args.seed)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  options = measures.SharpnessOptions(
      batch_size=args.batch_size, lanczos_iters=args.lanczos_iters,
      lanczos_tol=args.lanczos_tol, top_k=args.top_k,
      probes=args.probes, probe_batch_size=args.probe_batch_size, eps=args.eps,
      eps_norm=args.eps_norm, eps_steps=args.eps_steps, m=args.m, rho=args.rho,
      m_steps=args.m_steps, density_order=args.density_order, density_runs=args.density_runs,
  )
  result = measures.make_sharpness_fn(run.model, options)(
      variables, images, labels, jax.random.PRNGKey(args.seed),
      on_step=progress.step_callback(args.progress, unit="measure"),
  )
  result.update(workdir=run.workdir, round=round_idx, split=args.split, examples=len(labels),
                seed=args.seed, options=options._asdict())
  out = args.output or os.path.join(run.workdir, "analysis", "sharpness.json")
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  metrics.write_json_atomic(out, result)
  print(f"wrote {out}")
  if "density" in result:
    if plots.available():
      png = os.path.join(os.path.dirname(os.path.abspath(out)), "density.png")
      d = result["density"]
      print(f"wrote {plots.density(png, {f'round {round_idx}': (d['grid'], d['density'])})}")
    else:
      print(plots.MISSING_MESSAGE)
  keys = ("loss", "lambda_max", "trace", "trace_stderr", "eps_sharpness", "m_sharpness")
  print("  ".join(f"{k}={result[k]:.4g}" for k in keys if k in result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
