"""``python analysis/sharpness.py``: a shim over ``fedjax_med.cli.sharpness`` (installed: ``fedjax-med-sharpness``).

The flags are documented there and in ``analysis/sharpness.py --help``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.sharpness import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
