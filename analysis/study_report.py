"""``python analysis/study_report.py``: a shim over ``fedjax_med.cli.report`` (installed: ``fedjax-med-report``).

The flags are documented there and in ``analysis/study_report.py --help``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.report import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
