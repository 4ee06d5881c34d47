"""``python analysis/privacy_audit.py``: a shim over ``fedjax_med.cli.privacy_audit`` (also ``python -m fedjax_med.cli.privacy_audit``).

The flags are documented there and in ``analysis/privacy_audit.py --help``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fedjax_med.cli.privacy_audit import main  # noqa: E402

if __name__ == "__main__":
  sys.exit(main())
