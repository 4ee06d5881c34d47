"""Where the official MedMNIST files are, for tests that need them (else they skip)."""

import os
from pathlib import Path

import pytest


def real_root(filename: str) -> Path | None:
  """The folder holding an official file: $MEDMNIST_ROOT or ../shared/data/medmnist."""
  candidates = []
  if os.environ.get("MEDMNIST_ROOT"):
    candidates.append(Path(os.environ["MEDMNIST_ROOT"]).expanduser())
  candidates.append((Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist").resolve())
  for root in candidates:
    if (root / filename).is_file():
      return root
  return None


def require(filename: str) -> Path:
  """``real_root(filename)`` or skip the test with the reason."""
  root = real_root(filename)
  if root is None:
    pytest.skip(f"official {filename} not found in $MEDMNIST_ROOT or ../shared/data/medmnist")
  return root
