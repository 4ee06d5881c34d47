"""Loss landscape of a run (1D/2D, filter-normalized), interpolation to a second run, spectra.

  fedjax-med-landscape --workdirs=RUN_A[,RUN_B] [--grid=21] [--span=1.0] \
      [--examples=1000] [--trajectory] [--density_order=30]

Writes ``RUN_A/analysis/landscape.json`` and PNGs (matplotlib, Agg; skipped
with a message when matplotlib is absent): ``landscape_1d.png`` (two random
filter-normalized directions, Li et al. 2018), ``landscape_2d.png`` (contour),
``interpolation.png`` (A -> B, with RUN_B), ``trajectory.png`` (through A's
saved checkpoints, with ``--trajectory``) and ``density.png`` (Hessian
eigenvalue density of each run). Both runs must share the model. The loss is
evaluated on a seeded subset of A's data in eval mode. A missing workdir,
config or checkpoint exits with code 2 and one message.

In a clone also ``python analysis/landscape.py``. It logs "compiling NAME..." and
the compile time of each compiled function, then its progress per step (the loss
at A, each line and surface row, each path): a tqdm bar on a terminal, else a log
line every ~10 % with s/step and ETA (``--progress``).
"""

from __future__ import annotations

import argparse
import os
import sys

from fedjax_med.cli import logs
from fedjax_med.cli.args import flag as _flag


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _flag(p, "workdirs", required=True, help="RUN_A or RUN_A,RUN_B")
  _flag(p, "checkpoint", type=int, default=None, help="round of A (and B) (default: latest)")
  _flag(p, "examples", type=int, default=1000)
  _flag(p, "split", default="train", choices=("train", "val", "test"))
  _flag(p, "seed", type=int, default=0, help="subset and direction seed")
  _flag(p, "grid", type=int, default=21, help="points per axis (odd keeps the origin)")
  _flag(p, "span", type=float, default=1.0, help="slices cover [-span, span]")
  _flag(p, "no_surface", action="store_true", help="skip the grid x grid surface")
  _flag(p, "interp_points", type=int, default=21)
  _flag(p, "interp_margin", type=float, default=0.25)
  _flag(p, "trajectory", action="store_true", help="loss along A's saved checkpoints")
  _flag(p, "density_order", type=int, default=30, help="SLQ order (0: skip the density)")
  _flag(p, "density_runs", type=int, default=3)
  _flag(p, "batch_size", type=int, default=250)
  _flag(p, "points_per_batch", type=int, default=1, help="grid points vmapped together")
  _flag(p, "output_dir", default="", help="default RUN_A/analysis")
  _flag(p, "progress", default="auto", choices=("auto", "bar", "lines", "none"),
        help="auto: a bar on a terminal, else a log line every ~10%% with s/step and ETA")
  return p.parse_args(argv)


def _load(args):
  """Runs, restored variables and the evaluation subset; raises UserError subclasses."""
  import jax

  from fedjax_med.analysis import runs

  workdirs = [w for w in args.workdirs.split(",") if w]
  if not 1 <= len(workdirs) <= 2:
    raise runs.RunError(f"--workdirs takes one or two runs, got {len(workdirs)}")
  loaded = []
  for w in workdirs:
    run = runs.open_run(w)
    loaded.append((run, *runs.restore(run, args.checkpoint)))
  if len(loaded) == 2:
    shapes = [jax.tree.map(lambda x: x.shape, v["params"]) for _, _, v in loaded]
    if shapes[0] != shapes[1]:
      raise runs.RunError(f"{workdirs[0]} and {workdirs[1]} have different models "
                          f"({loaded[0][0].config.model.name} vs {loaded[1][0].config.model.name})")
  images, labels = runs.eval_subset(loaded[0][0].dataset, args.split, args.examples, args.seed)
  trajectory = None
  if args.trajectory:
    run = loaded[0][0]
    if len(run.rounds) < 2:
      raise runs.RunError(f"--trajectory needs >= 2 checkpoints; {run.workdir} has "
                          f"{list(run.rounds)} (raise --config.ckpt.keep when training)")
    stack = [runs.restore(run, r)[1] for r in run.rounds]
    trajectory = (list(run.rounds), jax.tree.map(lambda *xs: jax.numpy.stack(xs), *stack))
  return loaded, images, labels, trajectory


def main(argv=None) -> int:
  args = parse_args(argv)
  logs.setup_logging()
  import jax

  from fedjax_med import errors, metrics, progress
  from fedjax_med.analysis import measures, plots

  try:
    loaded, images, labels, trajectory = _load(args)
  except errors.UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  (run_a, round_a, var_a), other = loaded[0], (loaded[1] if len(loaded) > 1 else None)
  key = jax.random.PRNGKey(args.seed)
  result = measures.landscape_report(
      run_a.model, var_a, images, labels, key,
      other=other[2] if other else None,
      trajectory=trajectory[1] if trajectory else None,
      grid=args.grid, span=args.span, surface=not args.no_surface,
      interp_points=args.interp_points, interp_margin=args.interp_margin,
      batch_size=args.batch_size, points_per_batch=args.points_per_batch,
      on_step=progress.step_callback(args.progress),
  )
  names = {"A": (run_a.workdir, round_a)}
  if other:
    names["B"] = (other[0].workdir, other[1])
  result["runs"] = {k: {"workdir": w, "round": r} for k, (w, r) in names.items()}
  if trajectory:
    result["trajectory"]["rounds"] = trajectory[0]
  if args.density_order:
    options = measures.SharpnessOptions(
        batch_size=args.batch_size, lanczos_iters=0, probes=0, eps=0, m=0,
        density_order=args.density_order, density_runs=args.density_runs,
    )
    density_fn = measures.make_sharpness_fn(run_a.model, options)
    result["density"] = {
        name: density_fn(v, images, labels, jax.random.fold_in(key, 1),
                         on_step=progress.step_callback(args.progress))["density"]
        for name, v in [("A", var_a)] + ([("B", other[2])] if other else [])
    }
  result.update(split=args.split, examples=len(labels), seed=args.seed)
  out_dir = args.output_dir or os.path.join(run_a.workdir, "analysis")
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "landscape.json")
  metrics.write_json_atomic(path, result)
  print(f"wrote {path}")
  if not plots.available():
    print(plots.MISSING_MESSAGE)
    return 0
  for png in _plot(result, out_dir):
    print(f"wrote {png}")
  return 0


def _plot(result: dict, out_dir: str) -> list[str]:
  from fedjax_med.analysis import plots

  join = lambda name: os.path.join(out_dir, name)  # noqa: E731
  a = result["alphas"]
  written = [plots.curves(join("landscape_1d.png"),
                          {"direction 1": (a, result["line_1"]), "direction 2": (a, result["line_2"])},
                          "filter-normalized step", title="loss around A")]
  if "surface" in result:
    written.append(plots.contour(join("landscape_2d.png"), a, a, result["surface"], "loss around A"))
  if "interpolation" in result:
    i = result["interpolation"]
    written.append(plots.curves(join("interpolation.png"), {"A -> B": (i["t"], i["loss"])}, "t",
                                title="(1 - t) A + t B", marks=(0.0, 1.0)))
  if "trajectory" in result:
    tr = result["trajectory"]
    written.append(plots.curves(join("trajectory.png"), {"path": (tr["position"], tr["loss"])},
                                "round (checkpoints joined linearly)", title="loss along training",
                                marks=range(len(tr["rounds"])),
                                tick_labels=[str(r) for r in tr["rounds"]]))
  if "density" in result:
    written.append(plots.density(join("density.png"),
                                 {k: (d["grid"], d["density"]) for k, d in result["density"].items()},
                                 "Hessian eigenvalue density"))
  return written


if __name__ == "__main__":
  sys.exit(main())
