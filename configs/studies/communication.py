"""Study 5: accuracy vs megabytes uploaded, for upload compressors and local-step settings.

  python launch/sweep.py --study=configs/studies/communication.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/communication.py:cpu --output=docs/results

The quickstart setting (FedAvg, Dirichlet(0.5), 10 clients, all per round) with
the upload compressors of configs/comm.py at S=5 local steps (cpu: none, 8-, 4-
and 1-bit quantization, top-1%, rand-1% and rand-10% with error feedback; full:
all), and without compression at S in {1, 10, 25} on the same budget of local
steps (cpu: 100 per client, 100 / S rounds). Rand-1% with error feedback is a
slow-contraction compressor, not a broken one: an entry waits ~100 rounds on
average before it is sent, longer than the cpu run; rand-10% beside it shows the
same compressor at a contraction the run can see. Bytes are exact from the shapes and dtypes sent
(``metrics.jsonl``: ``bytes_up`` per evaluation). The report plots test
accuracy against MB uploaded and tabulates MB to reach 95% of the uncompressed
S=5 accuracy.

cpu: small CNN, PneumoniaMNIST, seeds 0-4.  full: both datasets, ResNet-8 (GN),
5x the budget, seeds 0-4.
"""

from fedjax_med.configs import comm
from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import CurveFigure, Paired, ReportSpec, Study, Target

TOTAL = 100  # local steps per client over the run (cpu)


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  total = TOTAL if cpu else 5 * TOTAL

  def steps(s):
    rounds = total // s
    return {"fl.local_steps": s, "fl.rounds": rounds, "eval.every": max(1, rounds // 15),
            "ckpt.every": rounds}

  settings = {f"{name}_S5": {**steps(5), **o} for name, o in comm.PRESETS.items()
              if name in (("none", "q8", "q4", "q1", "topk_ef", "randk_ef") if cpu else comm.PRESETS)}
  settings["randk10_ef_S5"] = {**steps(5), **comm.PRESETS["randk_ef"], "comm.fraction": 0.1}
  settings.update({f"none_S{s}": steps(s) for s in (1, 10, 25)})
  fixed = {"fl.num_clients": 10, "fl.clients_per_round": 10}
  if not cpu:
    fixed.update({"model.name": "resnet8", "model.norm": "group"})
  data = common.pick(common.DATASETS, ("pneumonia",)) if cpu else common.DATASETS
  return Study(
      name="communication", preset=preset, base=common.BASE,
      grids=({"data": data, "setting": settings},),
      seeds=(0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "setting"),
          target=Target(reference={"setting": "none_S5"}, fraction=0.95),
          metrics=("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc",
                   "total_mb_up", "target.mb_up", "target.round", "rounds_completed",
                   "heterogeneity.label_tv_mean", "wall_time_s"),
          paired=Paired(reference={"setting": "none_S5"},
                        metrics=("selected.best_val.test.balanced_accuracy",
                                 "selected.best_val.test.auc")),
          figures=(CurveFigure(x="bytes_up", color="setting", panel="data", logx=True),)),
      description=__doc__,
  )
