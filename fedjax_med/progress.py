"""Progress of a long loop: a tqdm bar on a terminal, else a log line every ~10 % with the pace.

Used by the training loop (one step = one round) and the analysis CLIs (one step =
one measure or one row of a landscape). Log lines go through ``logging`` (the
entry points route them through ``tqdm.write``: ``fedjax_med/cli/logs.py``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

MODES = ("auto", "bar", "lines", "none")


class Progress:
  """A tqdm bar on a terminal, else a log line every ~10% of the steps with s/step and ETA.

  The first step after a (re)start usually includes compilation: the pace and ETA
  are measured from its end, so they appear from the second logged step on.
  """

  def __init__(self, total: int, *, mode: str = "auto", unit: str = "step", initial: int = 0):
    if mode not in MODES:
      raise ValueError(f"progress mode {mode!r}: choose one of {list(MODES)}")
    self.total, self.initial, self.unit, self.bar = total, initial, unit, None
    if mode == "auto":
      mode = "bar" if sys.stderr.isatty() else "lines"
    self.mode = mode
    self.every = max(1, total // 10)
    self.t_first = None  # end of the first step (the compiling one): the steady pace
    self.first = initial
    if mode == "bar":
      import tqdm

      self.bar = tqdm.tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True)

  def update(self, index: int, note: str = "") -> None:
    """Step ``index`` (1-based, out of ``total``) is done; ``note`` is shown with it."""
    now = time.time()
    if self.t_first is None:
      self.t_first, self.first = now, index
    if self.bar is not None:
      if note:
        self.bar.set_postfix_str(note)
      self.bar.update(index - self.bar.n)
      return
    if self.mode != "lines" or (index % self.every and index != self.total):
      return
    head = f"{self.unit} {index}/{self.total}" + (f"  {note}" if note else "")
    done = index - self.first
    if not done:  # the first step after (re)start includes the compile: no pace yet
      log.info("%s", head)
      return
    pace = (now - self.t_first) / done
    log.info("%s  %.2f s/%s  ETA %.0f s", head, pace, self.unit, pace * (self.total - index))

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


StepCallback = Callable[[int, int, str], None]


def step_callback(mode: str = "auto", unit: str = "step") -> StepCallback:
  """``on_step(done, total, name)`` for the analysis functions (``fedjax_med/analysis/measures``).

  They call it with ``done=0`` before their first step and after each step; a
  :class:`Progress` is opened at 0 and closed at ``total``.
  """
  state: dict[str, Progress] = {}

  def on_step(done: int, total: int, name: str) -> None:
    if done == 0 or "bar" not in state:
      if "bar" in state:
        state.pop("bar").close()
      state["bar"] = Progress(total, mode=mode, unit=unit)
    if done:
      state["bar"].update(done, name)
    if done >= total:
      state.pop("bar").close()

  return on_step
