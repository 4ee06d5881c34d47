"""``python launch/sweep.py``: a shim over ``fedjax_med.cli.sweep`` (installed: ``fedjax-med-sweep``).

The flags are documented there and in ``launch/sweep.py --help``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.sweep import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
