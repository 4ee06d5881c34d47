"""Every algorithm of configs/algorithms.py under strong label skew, one run each.

  python launch/sweep.py --study=configs/studies/algorithm_presets.py:cpu
  python analysis/study_report.py --study=configs/studies/algorithm_presets.py:cpu --output=docs/results

One axis, ``algorithm``, whose labels are the presets of configs/algorithms.py
(fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox, scaffold, feddyn,
fedbn, fedsam, fedasam, fedexp, fedper, fedrep, ditto, apfl, local): PneumoniaMNIST, Dirichlet(0.1), 10 of 20 clients per
round, 40 rounds, seed 0, the preset file's untuned hyper-parameters.
configs/studies/heterogeneity.py asks the same question with seeds and intervals.
"""

from fedjax_med.configs import algorithms
from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import ReportSpec, Study


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset, ("cpu",))
  # Preset NAME of configs/algorithms.py is its default config with these overrides.
  labels = {name: {"algorithm.name": name, **o} for name, o in algorithms.PRESETS.items()}
  return Study(
      name="algorithm_presets", preset=preset, base="configs/algorithms.py",
      grids=({"algorithm": labels},), seeds=(0,),
      report=ReportSpec(table=("algorithm",), metrics=("test.accuracy", "test.auc",
                                                       "wall_time_s")),
      description=__doc__,
  )
