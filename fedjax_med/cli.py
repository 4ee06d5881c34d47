"""Shared bits of the command-line entry points (launch/, analysis/)."""

from __future__ import annotations

import argparse
import logging

_NOISY = ("absl", "jax", "orbax", "orbax.checkpoint", "etils")


def setup_logging() -> None:
  """INFO lines with a time stamp; JAX/orbax/absl chatter only from WARNING up."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
  for name in _NOISY:
    logging.getLogger(name).setLevel(logging.WARNING)


def flag(p: argparse.ArgumentParser, name: str, **kw) -> None:
  """``--name_with_underscores``, also accepted as ``--name-with-dashes``."""
  names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
  p.add_argument(*names, dest=name, **kw)
