"""Config and study files: a path, or the name of a file shipped in ``fedjax_med.configs``.

The repository's top-level ``configs/`` folder is installed as the package
``fedjax_med.configs`` (pyproject ``package-dir``), so the configs and studies
work without a clone. ``--config`` (training) and ``--study`` (sweep, report)
take either a path or a *packaged name*: the file's path under ``configs/``
without ``.py`` (``quickstart``, ``comm:topk_ef``) and, for studies, under
``configs/studies/`` (``heterogeneity:cpu``). A path that does not exist but
starts with ``configs/`` (``configs/quickstart.py``, the base of the studies)
also names the packaged file, so documented commands work outside a clone.

In a source checkout without an install, :func:`ensure_importable` (called by
``fedjax_med/__init__.py``) makes ``fedjax_med.configs`` the checkout's
``configs/`` folder, as an editable install does.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from fedjax_med.errors import UserError

PACKAGE = "fedjax_med.configs"
_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_SOURCE_DIR = os.path.join(os.path.dirname(_PKG_DIR), "configs")  # in a checkout
KINDS = {"config": ("", "def get_config"), "study": ("studies", "def get_study")}


class UnknownConfigError(UserError, FileNotFoundError):
  """Neither a file nor a packaged config or study (the message lists the packaged ones)."""


def ensure_importable() -> None:
  """In a source checkout (no ``fedjax_med/configs`` folder, ``../configs`` beside the
  package), registers that folder as ``fedjax_med.configs``; elsewhere does nothing."""
  if PACKAGE in sys.modules or os.path.isdir(os.path.join(_PKG_DIR, "configs")):
    return
  init = os.path.join(_SOURCE_DIR, "__init__.py")
  if not (os.path.isfile(init) and
          os.path.isfile(os.path.join(os.path.dirname(_PKG_DIR), "pyproject.toml"))):
    return
  spec = importlib.util.spec_from_file_location(PACKAGE, init,
                                                submodule_search_locations=[_SOURCE_DIR])
  module = importlib.util.module_from_spec(spec)
  sys.modules[PACKAGE] = module
  spec.loader.exec_module(module)
  sys.modules["fedjax_med"].configs = module


def configs_dir() -> str:
  """The folder of ``fedjax_med.configs`` (the clone's ``configs/`` in a checkout)."""
  ensure_importable()
  spec = importlib.util.find_spec(PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise UnknownConfigError(f"{PACKAGE} is not installed (reinstall fedjax_med)")
  return list(spec.submodule_search_locations)[0]


def packaged(kind: str = "config") -> dict[str, str]:
  """Packaged name -> file of every config (``get_config``) or study (``get_study``)."""
  sub, marker = KINDS[kind]
  folder = os.path.join(configs_dir(), sub)
  out = {}
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if name.endswith(".py") and not name.startswith("_"):
      with open(path, encoding="utf-8") as f:
        if marker in f.read():
          out[name[:-3]] = path
  return out


def resolve(spec: str, kind: str = "config") -> str:
  """``FILE[:ARG]`` -> ``PATH[:ARG]``: ``FILE`` itself when it is a file, else the packaged
  file it names.

  Raises:
    UnknownConfigError: neither (the message lists the packaged names).
  """
  file, sep, arg = spec.partition(":")
  if os.path.isfile(file):
    return spec
  name = file.replace(os.sep, "/")
  name = name.removeprefix("./").removeprefix("configs/").removesuffix(".py")
  if kind == "study":
    name = name.removeprefix("studies/")
  files = packaged(kind)
  if name in files:
    return files[name] + sep + arg
  where = "configs/" + KINDS[kind][0] + ("/" if KINDS[kind][0] else "")
  raise UnknownConfigError(
      f"{kind} {file!r} is neither a file nor a packaged {kind} ({where}); packaged: "
      f"{', '.join(files)}")
