"""Study figures stay readable: at most 1,200 px wide, one legend below the axes."""

import numpy as np
import pytest

from fedjax_med.analysis import plots

pytest.importorskip("matplotlib")
PIL = pytest.importorskip("PIL.Image")


def size(path):
  with PIL.open(path) as im:
    return im.size


def test_many_panels_wrap_into_two_columns_within_1200_px(tmp_path):
  x = np.arange(10)
  lines = {f"panel{i}": {f"line{j}": (x, x * j, np.full(10, 0.1)) for j in range(6)}
           for i in range(3)}
  width, height = size(plots.panels(str(tmp_path / "p.png"), lines, "round", "acc"))
  assert width <= 1200 and height > width / 2  # 2 x 2 grid, not 3 side by side


def test_wide_bar_groups_get_one_axis_per_row_within_1200_px(tmp_path):
  bars = {f"m{k}": {f"g{g}": {f"x{i}": (0.5, 0.02) for i in range(12)} for g in range(3)}
          for k in range(2)}
  width, _ = size(plots.grouped_bars(str(tmp_path / "b.png"), bars, "algorithm"))
  assert width <= 1200


def test_legend_is_below_the_axes_not_on_them(tmp_path, monkeypatch):
  import matplotlib.figure

  legends = []
  original = matplotlib.figure.Figure.legend

  def spy(fig, *args, **kwargs):
    legends.append(kwargs)
    return original(fig, *args, **kwargs)

  monkeypatch.setattr(matplotlib.figure.Figure, "legend", spy)
  x = np.arange(5)
  plots.panels(str(tmp_path / "p.png"), {"a": {"l1": (x, x, x * 0), "l2": (x, -x, x * 0)}},
               "round", "acc")
  assert len(legends) == 1 and legends[0]["bbox_to_anchor"][1] <= 0
