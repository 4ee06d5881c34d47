"""Every upload compressor of configs/comm.py, one run each (the quickstart setup).

  python launch/sweep.py --study=configs/studies/comm_presets.py:cpu
  python analysis/study_report.py --study=configs/studies/comm_presets.py:cpu --output=docs/results

One axis, ``preset``, whose labels are the presets of configs/comm.py (none,
q8, q4, q2, q1, topk, topk_ef, randk, randk_ef): FedAvg on PneumoniaMNIST,
Dirichlet(0.5), 10 clients, 30 rounds, seed 0. The report tabulates test
accuracy / AUC, MB uploaded and rounds and bytes until test accuracy reached
``comm.target_accuracy`` (0.8). configs/studies/communication.py asks the same
question with seeds and intervals.
"""

from fedjax_med.configs import comm
from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import ReportSpec, Study

METRICS = ("test.accuracy", "test.auc", "rounds_completed", "rounds_to_target",
           "bytes_up_to_target", "total_mb_up", "wall_time_s")


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset, ("cpu",))
  return Study(
      name="comm_presets", preset=preset, base="configs/comm.py",
      grids=({"preset": comm.PRESETS},), seeds=(0,),
      report=ReportSpec(table=("preset",), metrics=METRICS), description=__doc__,
  )
