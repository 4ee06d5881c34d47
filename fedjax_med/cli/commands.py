"""The entry points: each one's console script, ``python -m`` module and script in a clone.

``pip install`` puts the console scripts on PATH (pyproject ``[project.scripts]``);
``python -m fedjax_med.cli.<name>`` works wherever fedjax_med imports; the
scripts under ``launch/`` and ``analysis/`` of a clone are shims over the same
modules. The sweep runner launches its runs and post steps as ``python -m``
modules (no clone needed) and records each command in a re-runnable form.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import NamedTuple


class EntryPoint(NamedTuple):
  script: str  # console script (pip install)
  module: str  # python -m MODULE
  path: str  # the shim in a clone, relative to the repository root


ENTRY_POINTS = (
    EntryPoint("fedjax-med-train", "fedjax_med.cli.train", "launch/main.py"),
    EntryPoint("fedjax-med-sweep", "fedjax_med.cli.sweep", "launch/sweep.py"),
    EntryPoint("fedjax-med-report", "fedjax_med.cli.report", "analysis/study_report.py"),
    EntryPoint("fedjax-med-sharpness", "fedjax_med.cli.sharpness", "analysis/sharpness.py"),
    EntryPoint("fedjax-med-landscape", "fedjax_med.cli.landscape", "analysis/landscape.py"),
    EntryPoint("fedjax-med-plot", "fedjax_med.cli.plot", "analysis/plot_run.py"),
    EntryPoint("fedjax-med-privacy-audit", "fedjax_med.cli.privacy_audit",
               "analysis/privacy_audit.py"),
)


def _find(name: str) -> EntryPoint | None:
  name = name.replace(os.sep, "/")
  for e in ENTRY_POINTS:
    if name in (e.script, e.module) or name == e.path or name.endswith("/" + e.path):
      return e
  return None


def python_argv(target: str) -> list[str]:
  """The argv prefix that runs ``target`` in this interpreter.

  ``target`` is an entry point (its console script, module, or clone path such
  as ``analysis/landscape.py``: ``python -m`` its module), another ``.py`` file
  (run as a script) or another module name (``python -m``).
  """
  e = _find(target)
  if e is not None:
    return [sys.executable, "-m", e.module]
  if target.endswith(".py"):
    return [sys.executable, target]
  return [sys.executable, "-m", target]


def invocation(argv: Sequence[str], module: str) -> list[str]:
  """``argv`` of the running entry point ``module`` as the user typed it (for the records).

  ``argv[0]`` is shortened to the console script's name, ``python -m MODULE`` or
  ``python SCRIPT``; the rest is kept as given.
  """
  prog = argv[0] if argv else ""
  e = _find(module)
  base = os.path.basename(prog)
  if e is not None and base == e.script:
    head = [e.script]
  elif not prog or prog.replace(os.sep, "/").endswith(module.replace(".", "/") + ".py"):
    head = ["python", "-m", module]  # python -m (argv[0] is the module's file) or a call
  else:
    head = ["python", prog]
  return head + list(argv[1:])
