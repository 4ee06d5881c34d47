"""Argument helpers of the command-line entry points: flag spellings, the one-line error."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


def flag(p: argparse.ArgumentParser, name: str, **kw) -> None:
  """``--name_with_underscores``, also accepted as ``--name-with-dashes``."""
  names = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
  p.add_argument(*names, dest=name, **kw)


def fail(message: str, code: int = 2) -> NoReturn:
  """``error: MESSAGE`` on stderr and exit ``code`` (2: bad input)."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(code)
