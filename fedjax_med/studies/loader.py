"""Loading a study: ``configs/studies/x.py:preset`` or a packaged ``x:preset`` -> a checked
:class:`Study` (packaged names: ``fedjax_med/config_files.py``)."""

from __future__ import annotations

import importlib.util
import os
import re

from fedjax_med import config_files
from fedjax_med.errors import UserError
from fedjax_med.studies import grid
from fedjax_med.studies.specs import Study


class StudyError(UserError):
  """A study file that does not load, expand or check (missing, broken, unknown preset)."""


def load_study(spec: str) -> Study:
  """``configs/studies/x.py:preset`` (or packaged ``x:preset``) -> the Study (the file's
  ``get_study(preset)``).

  Raises:
    FileNotFoundError: no such file.
    config_files.UnknownConfigError: neither a file nor a packaged study.
    ValueError: the file has no ``get_study``, or it returns no Study.
  """
  path, _, preset = config_files.resolve(spec, "study").partition(":")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"study file {path!r} does not exist (see configs/studies/)")
  module_name = "_study_" + re.sub(r"\W", "_", os.path.abspath(path))
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_study"):
    raise ValueError(f"{path} has no get_study(preset) function")
  study = module.get_study(preset) if preset else module.get_study()
  if not isinstance(study, Study):
    raise ValueError(f"{path}: get_study returned a {type(study).__name__}, not a Study")
  return study


def load_checked(spec: str) -> Study:
  """:func:`load_study`, :func:`grid.expand`, :func:`grid.check` and the base config
  resolving (``config_files.resolve``); any failure is one :class:`StudyError`."""
  try:
    study = load_study(spec)
    grid.expand(study)
    grid.check(study)
    config_files.resolve(study.base)
  except Exception as e:  # noqa: BLE001 - a study file can fail in any way; report it in one line
    raise StudyError(f"cannot load --study={spec}: {type(e).__name__}: {e}") from e
  return study


def default_workdir(study: Study) -> str:
  return os.path.join("runs", "studies", study.name, study.preset)


def for_cli(spec: str, workdir: str = "") -> tuple[Study, str]:
  """``(load_checked(spec), workdir or default_workdir)``: what both study CLIs start from."""
  study = load_checked(spec)
  return study, workdir or default_workdir(study)
