"""Logging of the command-line entry points: one format, through ``tqdm.write``."""

from __future__ import annotations

import logging
import sys

_NOISY = ("absl", "jax", "orbax", "orbax.checkpoint", "etils")


class _TqdmHandler(logging.Handler):
  """Writes through ``tqdm.write`` so that log lines never glue onto a progress bar."""

  def emit(self, record: logging.LogRecord) -> None:
    try:
      import tqdm

      tqdm.tqdm.write(self.format(record), file=sys.stderr)
    except Exception:  # noqa: BLE001 - logging must not raise
      self.handleError(record)


def setup_logging() -> None:
  """One format for every entry point: INFO lines with a time stamp, through ``tqdm.write``
  (replacing absl's handler under ``app.run``); JAX/orbax/absl chatter only from WARNING up."""
  root = logging.getLogger()
  for h in list(root.handlers):  # absl's, with its long prefix; other handlers (pytest's) stay
    if type(h).__name__ == "ABSLHandler":
      root.removeHandler(h)
  if not root.handlers:
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    root.addHandler(handler)
  root.setLevel(logging.INFO)
  for name in _NOISY:
    logging.getLogger(name).setLevel(logging.WARNING)

