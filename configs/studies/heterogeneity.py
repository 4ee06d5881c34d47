"""Study 2: how non-IID clients hurt, and which algorithm copes.

  python launch/sweep.py --study=configs/studies/heterogeneity.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/heterogeneity.py:cpu

Label skew (Dirichlet alpha in {0.1, 0.5, 1, 10, 1000} and IID), quantity skew
(log-normal client sizes) and simulated site feature skew (per-client
gamma/bias/blur/noise, fedjax_med/data/site_shift.py) for FedAvg, FedProx,
SCAFFOLD, FedAdam and FedBN. The report gives final test accuracy / AUC,
rounds to 95% of the IID FedAvg accuracy and the worst client's accuracy (test
split reweighted to its label mix and rendered through its scanner,
fedjax_med/evaluation.py).

cpu (20 rounds, 10 clients, S=5, seeds 0-2), three grids:
  A. FedAvg x every label-skew alpha and IID, PneumoniaMNIST and BreastMNIST;
  B. FedAvg / FedProx / SCAFFOLD (lr 0.1 and 0.05) / FedAdam x {alpha=0.1, quantity,
     site}, PneumoniaMNIST;
  C. FedBN vs FedAvg on the same BatchNorm ResNet-8 under site skew, PneumoniaMNIST.
full: every algorithm x every partition x both datasets, 100 rounds, seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import (
  BarFigure,
  CurveFigure,
  LineFigure,
  Paired,
  ReportSpec,
  Study,
  Target,
)

LABEL_SKEW = ("a0.1", "a0.5", "a1", "a10", "a1000", "iid")
BN_MODEL = {"model.name": "resnet8", "model.norm": "batch"}


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  fixed = {"fl.num_clients": 10, "fl.clients_per_round": 10, "fl.local_steps": 5,
           "fl.rounds": 20 if cpu else 100, "eval.every": 2, "ckpt.every": 10}
  algs = common.pick(common.ALGORITHMS, ("fedavg", "fedprox", "scaffold", "fedadam"))
  # SCAFFOLD diverged at the shared client lr 0.1 in every cpu run (loss -> nan in
  # rounds 11-19, also with IID labels), so it also runs at half the lr.
  algs["scaffold_lr0.05"] = {**common.ALGORITHMS["scaffold"], "fl.client_lr": 0.05}
  bn = {"fedavg_bn": {**common.ALGORITHMS["fedavg"], **BN_MODEL},
        "fedbn": {**common.ALGORITHMS["fedbn"], **BN_MODEL}}
  if cpu:
    grids = (
        {"data": common.DATASETS, "partition": common.pick(common.PARTITIONS, LABEL_SKEW),
         "algorithm": common.pick(algs, ("fedavg",))},
        {"data": common.pick(common.DATASETS, ("pneumonia",)),
         "partition": common.pick(common.PARTITIONS, ("a0.1", "quantity", "site")),
         "algorithm": algs},
        {"data": common.pick(common.DATASETS, ("pneumonia",)),
         "partition": common.pick(common.PARTITIONS, ("site",)), "algorithm": bn},
    )
  else:
    grids = ({"data": common.DATASETS, "partition": common.PARTITIONS,
              "algorithm": {**algs, **bn}},)
  return Study(
      name="heterogeneity", preset=preset, base=common.BASE, grids=grids,
      seeds=(0, 1, 2) if cpu else (0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "partition", "algorithm"),
          target=Target(reference={"partition": "iid", "algorithm": "fedavg"}, fraction=0.95),
          metrics=("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc",
                   "sites.balanced_accuracy.mean", "sites.balanced_accuracy.worst",
                   "heterogeneity.label_tv_mean", "target.round", "wall_time_s"),
          paired=Paired(reference={"partition": "iid", "algorithm": "fedavg"},
                        metrics=("selected.best_val.test.balanced_accuracy",
                                 "selected.best_val.test.auc",
                                 "sites.balanced_accuracy.worst")),
          figures=(LineFigure(x="partition", order=LABEL_SKEW, color="data",
                              where={"algorithm": "fedavg"},
                              metrics=("selected.best_val.test.balanced_accuracy",
                                       "selected.best_val.test.auc",
                                       "sites.balanced_accuracy.worst")),
                   BarFigure(x="partition", color="algorithm", where={"data": "pneumonia"},
                             metrics=("selected.best_val.test.balanced_accuracy",
                                      "sites.balanced_accuracy.worst")),
                   CurveFigure(x="round", color="partition", panel="data",
                               where={"algorithm": "fedavg"}))),
      description=__doc__,
  )
