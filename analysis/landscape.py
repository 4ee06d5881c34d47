"""``python analysis/landscape.py``: a shim over ``fedjax_med.cli.landscape`` (installed: ``fedjax-med-landscape``).

The flags are documented there and in ``analysis/landscape.py --help``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.landscape import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
