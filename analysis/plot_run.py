"""``python analysis/plot_run.py``: a shim over ``fedjax_med.cli.plot`` (installed: ``fedjax-med-plot``).

The flags are documented there and in ``analysis/plot_run.py --help``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.plot import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
