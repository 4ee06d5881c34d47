"""``python launch/main.py --config=configs/quickstart.py --workdir=runs/qs``: trains one run.

A shim over ``fedjax_med.cli.train`` (installed: ``fedjax-med-train``), which documents the
flags and exit codes.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.train import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
