"""PNG curves of one or several runs: train loss and val/test metrics against the round.

  fedjax-med-plot --workdir=runs/quickstart [--workdir=runs/central ...] \
      [--output=runs/quickstart/curves.png] [--metrics=loss,accuracy,balanced_accuracy,auc]

(in a clone also ``python analysis/plot_run.py ...``).

Reads each workdir's metrics.jsonl (needs matplotlib: pip install "fedjax_med[analysis]").
Bad input (no such workdir, no metrics.jsonl, no matplotlib) exits 2 with one line.
"""

import argparse
import os
import sys

from fedjax_med import metrics
from fedjax_med.cli.args import flag


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  flag(p, "workdir", action="append", required=True, help="a run's workdir (repeatable)")
  flag(p, "output", default="", help="PNG path (default: <first workdir>/curves.png)")
  flag(p, "metrics", default="loss,accuracy,balanced_accuracy,auc")
  args = p.parse_args(argv)
  try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    print('error: matplotlib is missing: pip install -e ".[analysis]"', file=sys.stderr)
    return 2
  runs = {}
  for workdir in args.workdir:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
      print(f"error: {path} does not exist; pass the --workdir of a training run", file=sys.stderr)
      return 2
    runs[workdir] = metrics.read_jsonl(path)
  names = [m for m in args.metrics.split(",") if m]
  fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
  styles = {"train": ":", "val": "--", "test": "-"}  # one colour per run, a style per split
  for ax, name in zip(axes[0], names, strict=True):
    for i, (workdir, records) in enumerate(runs.items()):
      label = os.path.basename(os.path.normpath(workdir))
      for split, style in styles.items():
        pts = [(r["round"], r[name]) for r in records
               if r.get("split") == split and r.get(name) is not None]
        if pts:
          xs, ys = zip(*pts, strict=True)
          ax.plot(xs, ys, label=f"{label} {split}", linestyle=style, color=f"C{i}")
    ax.set_xlabel("round")
    ax.set_title(name.replace("_", " "))
    ax.grid(alpha=0.3)
  axes[0][0].legend(fontsize=7)
  fig.tight_layout()
  out = args.output or os.path.join(args.workdir[0], "curves.png")
  fig.savefig(out, dpi=120)
  print(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
