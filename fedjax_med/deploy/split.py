"""Cuts a MedMNIST file into one file per site, by the configured partition (demos).

``python -m fedjax_med.deploy.split --config=quickstart --out=sites/`` writes
``sites/site_000.npz`` ... one per client of ``fl.num_clients``: ``train_*`` the
client's training share in the simulation's partition order, ``test_*`` its held-out
share (``eval.site_holdout``), ``val_*`` empty. Each site then starts with its own file
(``python -m fedjax_med.deploy.site``). A real site skips this and brings its own
MedMNIST-format file. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from fedjax_med import errors
from fedjax_med.cli.args import fail, flag


def site_path(out: str, client_id: int) -> str:
  """The file of site ``client_id`` under ``out``."""
  return os.path.join(out, f"site_{client_id:03d}.npz")


def write_sites(config, out: str) -> list[str]:
  """Writes every site's file (see module doc); returns their paths.

  Raises:
    ConfigError / DataError: bad config or data (nothing written).
  """
  from fedjax_med import experiment
  from fedjax_med.deploy import federation

  federation.check_supported(config)
  exp = experiment.build(config)
  ds, sites = exp.dataset, exp.sites
  empty_i = ds.train.images[:0]
  empty_l = _stored(ds.train.labels[:0], ds.multi_label)
  os.makedirs(out, exist_ok=True)
  paths = []
  for c in range(sites.train.num_clients):
    train, test = sites.train.client(c), sites.test.client(c)
    path = site_path(out, c)
    tmp = path + ".tmp.npz"
    np.savez(tmp, train_images=ds.train.images[train],
             train_labels=_stored(ds.train.labels[train], ds.multi_label),
             val_images=empty_i, val_labels=empty_l, test_images=ds.train.images[test],
             test_labels=_stored(ds.train.labels[test], ds.multi_label))
    os.replace(tmp, path)
    paths.append(path)
  return paths


def _stored(labels: np.ndarray, multi_label: bool) -> np.ndarray:
  """Labels as MedMNIST stores them: [N, 1] (multi-label [N, L])."""
  return labels if multi_label else labels.reshape(-1, 1)


def main(argv: list[str] | None = None) -> int:
  """``python -m fedjax_med.deploy.split --config=... --out=DIR [--config.KEY=VALUE ...]``."""
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a for a in argv if a.startswith("--config.")]
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  flag(p, "config", required=True, help="config file or packaged name")
  flag(p, "out", required=True, help="folder for site_NNN.npz")
  args = p.parse_args([a for a in argv if not a.startswith("--config.")])
  from fedjax_med.deploy import federation

  try:
    config = federation.load_config(args.config, overrides)
    if os.path.exists(args.out) and os.listdir(args.out):
      raise errors.ConfigError(f"--out={args.out} is not empty; choose a new folder")
    paths = write_sites(config, args.out)
  except errors.UserError as e:
    fail(str(e).splitlines()[0])
  print(f"wrote {len(paths)} site files to {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
