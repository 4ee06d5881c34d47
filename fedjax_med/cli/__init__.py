"""Command-line entry points: one module per command (``python -m fedjax_med.cli.<name>``).

``train``, ``sweep``, ``report``, ``sharpness``, ``landscape`` and ``plot`` each have a
``main(argv=None) -> int``; pyproject installs them as the ``fedjax-med-*`` console
scripts (``commands.py``), and ``launch/`` and ``analysis/`` of a clone are shims
over them. ``logs`` and ``args`` hold what they share.
"""

from fedjax_med.cli.args import fail, flag
from fedjax_med.cli.logs import setup_logging

__all__ = ["fail", "flag", "setup_logging"]
