"""The pure analysis tools load without the trainer, the experiment builder or orbax."""

import os
import subprocess
import sys

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_importing_hvp_loads_neither_orbax_nor_the_trainer():
  code = (
      "import sys, fedjax_med.analysis.hvp, fedjax_med.analysis.lanczos; "
      "bad = sorted(m for m in sys.modules if m.startswith('orbax') or m in "
      "('fedjax_med.train', 'fedjax_med.experiment', 'fedjax_med.checkpoint', "
      "'fedjax_med.analysis.runs')); "
      "sys.exit(f'loaded {bad}' if bad else 0)"
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=_REPO)
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        timeout=120, cwd=_REPO)
  assert proc.returncode == 0, proc.stderr[-2000:]
