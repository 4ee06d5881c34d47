"""Loading a study file: ``configs/studies/x.py:preset`` -> a checked :class:`Study`."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

from fedjax_med.errors import UserError
from fedjax_med.studies import grid
from fedjax_med.studies.specs import Study

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class StudyError(UserError):
  """A study file that does not load, expand or check (missing, broken, unknown preset)."""


def load_study(spec: str) -> Study:
  """``configs/studies/x.py:preset`` -> the Study (the file's ``get_study(preset)``).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the file has no ``get_study``, or it returns no Study.
  """
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"study file {path!r} does not exist (see configs/studies/)")
  module_name = "_study_" + re.sub(r"\W", "_", os.path.abspath(path))
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  if ROOT not in sys.path:  # study files import configs.studies.common
    sys.path.insert(0, ROOT)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_study"):
    raise ValueError(f"{path} has no get_study(preset) function")
  study = module.get_study(preset) if preset else module.get_study()
  if not isinstance(study, Study):
    raise ValueError(f"{path}: get_study returned a {type(study).__name__}, not a Study")
  return study


def load_checked(spec: str) -> Study:
  """:func:`load_study`, :func:`grid.expand` and :func:`grid.check`; any failure is one
  :class:`StudyError`."""
  try:
    study = load_study(spec)
    grid.expand(study)
    grid.check(study)
  except Exception as e:  # noqa: BLE001 - a study file can fail in any way; report it in one line
    raise StudyError(f"cannot load --study={spec}: {type(e).__name__}: {e}") from e
  return study


def default_workdir(study: Study) -> str:
  return os.path.join("runs", "studies", study.name, study.preset)


def for_cli(spec: str, workdir: str = "") -> tuple[Study, str]:
  """``(load_checked(spec), workdir or default_workdir)``: what both study CLIs start from."""
  study = load_checked(spec)
  return study, workdir or default_workdir(study)
