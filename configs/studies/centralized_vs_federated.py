"""Study 1: centralized vs federated training on the same samples.

  python launch/sweep.py --study=configs/studies/centralized_vs_federated.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/centralized_vs_federated.py:cpu --output=docs/results

For each partition of the training split into 10 sites (IID, Dirichlet(0.5)),
FedAvg vs centralized SGD on the pooled training shares of the same sites: same
model, batch size, learning rate and number of sample-gradient evaluations per
round (10 clients x S steps vs one model x 10 S steps), and the same per-site
held-out shares (20 %), so the pooled and the per-site results pair up run by
run (same seed, same sites). The report gives the validation-selected test
balanced accuracy and AUC, every site on its own held-out share, rounds, wall
time and bytes to reach 95% of the centralized accuracy, paired comparisons
with the centralized run of the same partition and seed (Holm-corrected), and
compares the centralized number with the MedMNIST v2 ResNet-18 (28) row.

cpu: small CNN, 30 rounds of S=5, PneumoniaMNIST + BreastMNIST + RetinaMNIST
(RGB, 5 ordinal classes), seeds 0-4.
full: ResNet-18 (the MedMNIST v2 baseline architecture, GroupNorm for FedAvg),
100 rounds, seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import Baseline, CurveFigure, Paired, ReportSpec, Study, Target


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  clients, steps = 10, 5
  fixed = {"fl.num_clients": clients, "fl.clients_per_round": clients, "fl.local_steps": steps,
           "fl.rounds": 30 if cpu else 100, "eval.every": 2, "ckpt.every": 10}
  if not cpu:
    fixed.update({"model.name": "resnet18", "model.norm": "group"})
  partitions = common.pick(common.PARTITIONS, ("iid", "a0.5"))
  methods = {"centralized": common.centralized(clients, steps), "fedavg": {}}
  return Study(
      name="centralized_vs_federated", preset=preset, base=common.BASE,
      grids=({"data": common.DATASETS, "partition": partitions, "method": methods},),
      seeds=(0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "partition", "method"),
          target=Target(reference={"method": "centralized"}, fraction=0.95),
          metrics=("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc",
                   "test.accuracy", "sites.balanced_accuracy.mean",
                   "sites.balanced_accuracy.worst", "heterogeneity.label_tv_mean",
                   "target.round", "target.elapsed_s", "target.mb_up", "total_mb_up",
                   "wall_time_s"),
          paired=Paired(reference={"method": "centralized"},
                        metrics=("selected.best_val.test.balanced_accuracy",
                                 "selected.best_val.test.auc",
                                 "sites.balanced_accuracy.mean",
                                 "sites.balanced_accuracy.worst")),
          figures=(CurveFigure(x="round", color="method", panel="data",
                               where={"partition": "a0.5"}),
                   CurveFigure(x="elapsed_s", color="method", panel="data",
                               where={"partition": "a0.5"})),
          baseline=Baseline(where={"data": "pneumonia", "partition": "iid",
                                   "method": "centralized"},
                            accuracy=0.854, auc=0.944,
                            source="Yang et al., MedMNIST v2, Scientific Data 10:41 (2023), "
                                   "Table 3, PneumoniaMNIST, ResNet-18 (28)")),
      description=__doc__,
  )
