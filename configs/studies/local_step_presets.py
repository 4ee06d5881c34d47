"""Local steps vs rounds at a fixed budget (configs/local_steps.py), one run per S.

  python launch/sweep.py --study=configs/studies/local_step_presets.py:cpu
  python analysis/study_report.py --study=configs/studies/local_step_presets.py:cpu --output=docs/results

One axis, ``steps``, whose labels are the presets S of configs/local_steps.py
(1, 5, 20, 50): S local steps for 300 / S rounds, so every run spends 10
clients x 300 steps x 64 examples; quickstart setup, seed 0. The report
tabulates test accuracy / AUC, MB uploaded and rounds and bytes until test
accuracy reached ``comm.target_accuracy`` (0.8).
"""

from fedjax_med.configs import local_steps
from fedjax_med.configs.studies import comm_presets, common
from fedjax_med.studies.specs import ReportSpec, Study

STEPS = (1, 5, 20, 50)


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset, ("cpu",))
  return Study(
      name="local_step_presets", preset=preset, base="configs/local_steps.py",
      grids=({"steps": {str(s): local_steps.overrides(s) for s in STEPS}},), seeds=(0,),
      report=ReportSpec(table=("steps",), metrics=comm_presets.METRICS), description=__doc__,
  )
