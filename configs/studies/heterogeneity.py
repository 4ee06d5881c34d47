"""Study 2: how non-IID clients hurt, and which algorithm copes.

  python launch/sweep.py --study=configs/studies/heterogeneity.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/heterogeneity.py:cpu --output=docs/results

Label skew: per_client Dirichlet around the global class mix, q ~ Dir(alpha p)
(Hsu et al. 2019), every run's measured skew in summary.json "heterogeneity"
(mean total-variation distance of the clients' label mixes from the global one).
Site feature skew: IID labels, each client's images through its own simulated
scanner (fedjax_med/data/site_shift.py). Metrics: the validation-selected
model's test balanced accuracy and AUC, and every site's balanced accuracy on
its own held-out 20 % (mean and worst site).

cpu (20 rounds, 10 clients all per round, S=5, B=64, seeds 0-4), three grids:
  A. FedAvg x alpha in {0.1, 1, 10} and IID, PneumoniaMNIST, BreastMNIST and
     RetinaMNIST (alpha 0.5 skews binary sets as much as 0.1, and alpha 1000 is
     as IID as the IID split: both are in the full preset);
  B. at alpha = 0.1 on PneumoniaMNIST, against FedAvg (client lr 0.1): FedAvg at
     lr 0.05, FedProx with mu in {0.001, 0.01, 0.1, 1}, SCAFFOLD at lr 0.1 and
     0.05 (its own grid: it diverged at 0.1 in the pilot) and FedAdam;
  C. FedBN vs FedAvg on the same BatchNorm ResNet-8 under site skew, PneumoniaMNIST.
Paired comparisons (by seed, Holm within each family): each alpha against IID
(A), each algorithm against FedAvg at alpha 0.1 (B), FedBN against FedAvg (C).
full: every algorithm setting x every partition x the three datasets, 100 rounds,
seeds 0-4.
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
LABEL_SKEW_CPU = ("a0.1", "a1", "a10", "iid")
BN_MODEL = {"model.name": "resnet8", "model.norm": "batch"}
SELECTED = ("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc",
            "sites.balanced_accuracy.worst")


def algorithm_settings() -> dict:
  """The algorithm axis of grid B: lr and mu grids against FedAvg at the shared lr 0.1."""
  algs = {"fedavg_lr0.05": {**common.ALGORITHMS["fedavg"], "fl.client_lr": 0.05}}
  for mu in (0.001, 0.01, 0.1, 1.0):
    algs[f"fedprox_mu{mu:g}"] = {**common.ALGORITHMS["fedprox"], "algorithm.fedprox.mu": mu}
  algs["scaffold"] = common.ALGORITHMS["scaffold"]
  algs["scaffold_lr0.05"] = {**common.ALGORITHMS["scaffold"], "fl.client_lr": 0.05}
  algs["fedadam"] = common.ALGORITHMS["fedadam"]
  return algs


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  fixed = {"fl.num_clients": 10, "fl.clients_per_round": 10, "fl.local_steps": 5,
           "fl.rounds": 20 if cpu else 100, "eval.every": 2, "ckpt.every": 10}
  fedavg = common.pick(common.ALGORITHMS, ("fedavg",))
  bn = {"fedavg_bn": {**common.ALGORITHMS["fedavg"], **BN_MODEL},
        "fedbn": {**common.ALGORITHMS["fedbn"], **BN_MODEL}}
  if cpu:
    grids = (
        {"data": common.DATASETS, "partition": common.pick(common.PARTITIONS, LABEL_SKEW_CPU),
         "algorithm": fedavg},
        {"data": common.pick(common.DATASETS, ("pneumonia",)),
         "partition": common.pick(common.PARTITIONS, ("a0.1",)),
         "algorithm": algorithm_settings()},
        {"data": common.pick(common.DATASETS, ("pneumonia",)),
         "partition": common.pick(common.PARTITIONS, ("site",)), "algorithm": bn},
    )
  else:
    grids = ({"data": common.DATASETS, "partition": common.PARTITIONS,
              "algorithm": {**fedavg, **algorithm_settings(), **bn}},)
  order = LABEL_SKEW_CPU if cpu else LABEL_SKEW
  return Study(
      name="heterogeneity", preset=preset, base=common.BASE, grids=grids,
      seeds=(0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "partition", "algorithm"),
          target=Target(reference={"partition": "iid", "algorithm": "fedavg"}, fraction=0.95),
          metrics=(*SELECTED[:2], "sites.balanced_accuracy.mean", SELECTED[2],
                   "heterogeneity.label_tv_mean", "target.round", "wall_time_s"),
          paired=(Paired(reference={"partition": "iid"}, where={"algorithm": "fedavg"},
                         metrics=SELECTED),
                  Paired(reference={"algorithm": "fedavg"},
                         where={"partition": "a0.1"} if cpu else {}, metrics=SELECTED),
                  Paired(reference={"algorithm": "fedavg_bn"}, where={"algorithm": "fedbn"},
                         metrics=SELECTED)),
          figures=(LineFigure(x="partition", order=order, color="data",
                              where={"algorithm": "fedavg"}, metrics=SELECTED),
                   BarFigure(x="algorithm", color="partition",
                             where={"data": "pneumonia", "partition": "a0.1"} if cpu else
                             {"data": "pneumonia"},
                             metrics=SELECTED[::2]),
                   CurveFigure(x="round", color="partition", panel="data",
                               where={"algorithm": "fedavg"}))),
      description=__doc__,
  )
