"""Study 6: what differential privacy costs in accuracy, per level and budget.

  python launch/sweep.py --study=configs/studies/privacy.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/privacy.py:cpu --output=docs/results

FedAvg on 10 sites, all taking part in every round, without DP (``none``) and
with DP at epsilon in {1, 3, 8} (delta 1e-5, the noise calibrated by the
accountant for the whole run) at two levels: ``record`` (DP-SGD in every site,
Poisson batches, per-example clip 1.0) and ``client`` (DP-FedAvg, every site's
delta clipped to 1.0, noise on the sum). ``record_einf`` clips and samples as
``record`` without noise: it separates the cost of clipping and Poisson batches
from the cost of the noise. The report gives the validation-selected test
balanced accuracy and AUC per setting with 95 % intervals, the epsilon each
run spent, the wall time (the cost of per-example clipping: also
``bench/privacy_speed.py``), and paired comparisons (by seed, Holm) of every DP
setting against ``none`` on the same dataset.

What to expect from the sizes: a site of PneumoniaMNIST holds ~380 training
records (q = B / n ~ 0.17 at B=64), of RetinaMNIST ~86 (q ~ 0.74) and of
BreastMNIST ~44 (q = 1: no amplification by sampling), so record-level DP costs
most on the small sets. With 10 sites all taking part (q = 1) client-level DP
gets no amplification either, and its noise on the mean has std
noise_multiplier * clip / 10: DP-FedAvg is made for many sites.

Record-level DP also runs at a learning rate for clipped gradients
(``record_e8_lr0.6``, ``record_einf_lr0.6``: client lr 0.6 instead of 0.1): at the
plain lr, clipping each example's gradient (norms 4-14 at initialization) to 1.0
shrinks every step ~7x and biases it toward the majority class, and record-level
DP does not learn even without noise (``record_einf``).

cpu: small CNN, 28 px, S=5, B=64, 10 rounds, seeds 0-4: every setting on
PneumoniaMNIST (55 runs), epsilon 3 left out on BreastMNIST and RetinaMNIST (70
runs), to fit 2 cores beside the robustness study.
full: ResNet-18 (GroupNorm: BatchNorm has no per-example gradients), 100 rounds,
seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import BarFigure, Paired, ReportSpec, Study

SELECTED = ("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc")
EPSILONS = (1, 3, 8)


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  settings = {"none": {}}
  for level in ("record", "client"):
    for eps in EPSILONS:
      settings[f"{level}_e{eps}"] = {"privacy.level": level, "privacy.epsilon": float(eps)}
  settings["record_einf"] = {"privacy.level": "record", "privacy.noise_multiplier": 0.0}
  settings["client_einf"] = {"privacy.level": "client", "privacy.noise_multiplier": 0.0}
  fixed = {"fl.num_clients": 10, "fl.clients_per_round": 10, "fl.local_steps": 5,
           "fl.rounds": 10 if cpu else 100, "eval.every": 1 if cpu else 5, "ckpt.every": 10,
           "privacy.delta": 1e-5, "privacy.clip_norm": 1.0,
           # augmentation draws are per example: fine for DP-SGD, kept from the quickstart
           }
  if not cpu:
    fixed.update({"model.name": "resnet18", "model.norm": "group"})
  # Record-level DP at a learning rate for clipped gradients: at the plain runs' lr (0.1)
  # clipping every per-example gradient (norms 4-14 at init) to 1.0 shrinks each step ~7x
  # and biases it toward the majority class, so record_einf does not learn (the pilot of
  # this study); lr 0.6 trained the clipped, noiseless centralized diagnostic.
  dp_lr = {f"{name}_lr0.6": {**settings[name], "fl.client_lr": 0.6}
           for name in ("record_e8", "record_einf")}
  if cpu:  # 2 cores: every setting on PneumoniaMNIST, epsilon 3 left out on the others
    grids = (
        {"data": common.pick(common.DATASETS, ("pneumonia",)), "setting": {**settings, **dp_lr}},
        {"data": common.pick(common.DATASETS, ("breast", "retina")),
         "setting": {k: v for k, v in settings.items() if not k.endswith("_e3")}},
    )
  else:
    grids = ({"data": common.DATASETS, "setting": {**settings, **dp_lr}},)
  return Study(
      name="privacy", preset=preset, base=common.BASE,
      grids=grids,
      seeds=(0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "setting"),
          metrics=(*SELECTED, "test.accuracy", "privacy.epsilon", "privacy.noise_multiplier",
                   "sites.balanced_accuracy.mean", "heterogeneity.label_tv_mean", "wall_time_s"),
          paired=Paired(reference={"setting": "none"}, metrics=SELECTED),
          figures=(BarFigure(x="setting", color="data", metrics=SELECTED),)),
      description=__doc__,
  )
