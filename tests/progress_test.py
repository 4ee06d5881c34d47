"""Progress lines: every ~10 % of the steps, pace and ETA from the second logged step on."""

import logging

from fedjax_med import progress


def test_lines_every_tenth_with_pace_and_eta(caplog):
  caplog.set_level(logging.INFO, logger="fedjax_med.progress")
  bar = progress.Progress(20, mode="lines", unit="round")
  for i in range(1, 21):
    bar.update(i, f"loss {i}")
  bar.close()
  lines = [r.getMessage() for r in caplog.records]
  assert [line.split()[1] for line in lines] == [f"{i}/20" for i in range(2, 21, 2)]
  # the pace is measured from the end of step 1 (it includes the compile)
  assert all("s/round  ETA" in line for line in lines) and lines[-1].endswith("ETA 0 s")
  caplog.clear()
  bar = progress.Progress(3, mode="lines", unit="round")
  bar.update(1, "loss 1")
  assert [r.getMessage() for r in caplog.records] == ["round 1/3  loss 1"]  # no pace yet


def test_step_callback_opens_and_closes_per_sequence(caplog):
  caplog.set_level(logging.INFO, logger="fedjax_med.progress")
  on_step = progress.step_callback("lines", unit="measure")
  for _ in range(2):
    for done in range(4):
      on_step(done, 3, f"m{done}")
  lines = [r.getMessage() for r in caplog.records]
  assert lines == ["measure 1/3  m1", *(lines[1:3]), "measure 1/3  m1", *(lines[4:6])]
  assert all("s/measure" in line for line in lines[1:3] + lines[4:6])


def test_none_mode_is_silent(caplog):
  caplog.set_level(logging.INFO, logger="fedjax_med.progress")
  bar = progress.Progress(3, mode="none")
  for i in range(1, 4):
    bar.update(i)
  assert not caplog.records
