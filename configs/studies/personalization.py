"""Study 8: does joining the federation give each site a better model than training alone?

  python launch/sweep.py --study=configs/studies/personalization.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/personalization.py:cpu --output=docs/results

Every site keeps 20 % of its own data as its local test set (``eval.site_holdout``)
and every method is judged there, each site with the model it would use:

- ``local``: every site trains alone, the same budget (the baseline of "alone");
- ``fedavg``: the global model (the baseline of "federated, not personalized");
  the same runs also fine-tune it for 20 local steps at every site before the
  site's test (``personal.finetune_steps``: summary ``sites_finetuned``, the
  ``sites_finetuned.*`` columns of the ``fedavg`` rows: fine-tuned FedAvg);
- ``fedbn`` (the same CNN with BatchNorm after each conv, ``model.norm=batch``:
  its BatchNorm layers stay at each site),
  ``fedper`` (the classifier head stays), ``fedrep`` (head first, then the body:
  head_fraction 0.5 of S=5 is 3 head steps and 2 body steps), ``ditto`` (lam
  0.1) and ``apfl`` (alpha 0.25, learned at lr 0.01): each site's own model,
  beside the global model (``sites_global``). FedBN's model differs from every
  other row's by its two BatchNorm layers: its comparisons with ``local`` and
  ``fedavg`` include what BatchNorm itself does; its own-vs-global columns
  (``sites`` vs ``sites_global``, one model) isolate what keeping BatchNorm at the
  site does.

Partitions of 10 sites: label skew Dirichlet(0.1) and Dirichlet(0.5) (per-client,
around the global class mix), quantity skew (log-normal sizes, sigma 1) and site
feature skew (IID labels, each site's images through its own simulated scanner).
Columns: mean and worst over sites of the per-site balanced accuracy and AUC, the
validation-selected pooled test balanced accuracy, the measured label skew; site by
site against ``local`` of the same seed: on how many of the 10 sites the method's
held-out balanced accuracy is higher (``sites_vs_local.wins``; fine-tuned FedAvg:
``sites_finetuned_vs_local.wins``) and the mean per-site gain; paired tests (by seed,
Holm) of every method against ``local`` and against ``fedavg``.

cpu: PneumoniaMNIST, BreastMNIST and RetinaMNIST, 28 px, small CNN, 10 rounds of
S=5, B=32, all sites every round, seeds 0-4 (420 runs, about 2.5 h of a 2-core
machine with 2 jobs).
full: the same at 30 rounds, S=10.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import BarFigure, Paired, ReportSpec, SiteWins, Study

BN_MODEL = {"model.name": "cnn", "model.norm": "batch"}
SITES = ("sites.balanced_accuracy.mean", "sites.balanced_accuracy.worst", "sites.auc.mean",
         "sites.auc.worst")

METHODS = {
    "local": {"algorithm.name": "local"},
    "fedavg": {"algorithm.name": "fedavg", "personal.finetune_steps": 20},
    "fedbn": {"algorithm.name": "fedbn", **BN_MODEL},
    "fedper": {"algorithm.name": "fedper"},
    "fedrep": {"algorithm.name": "fedrep", "algorithm.fedrep.head_fraction": 0.5},
    "ditto": {"algorithm.name": "ditto", "algorithm.ditto.lam": 0.1},
    "apfl": {"algorithm.name": "apfl", "algorithm.apfl.alpha": 0.25,
             "algorithm.apfl.alpha_lr": 0.01},
}


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  fixed = {"fl.num_clients": 10, "fl.clients_per_round": 10, "fl.local_steps": 5 if cpu else 10,
           "fl.batch_size": 32, "fl.rounds": 10 if cpu else 30, "eval.every": 2 if cpu else 5,
           "ckpt.every": 10, "eval.site_holdout": 0.2}
  grids = ({
      "data": common.pick(common.DATASETS, ("pneumonia", "breast", "retina")),
      "partition": common.pick(common.PARTITIONS, ("a0.1", "a0.5", "quantity", "site")),
      "method": METHODS,
  },)
  return Study(
      name="personalization", preset=preset, base=common.BASE, grids=grids,
      seeds=(0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "partition", "method"),
          metrics=(*SITES, "sites_vs_local.wins", "sites_vs_local.gain",
                   "sites_global.balanced_accuracy.mean",
                   "sites_finetuned.balanced_accuracy.mean", "sites_finetuned.auc.mean",
                   "sites_finetuned_vs_local.wins", "sites_finetuned_vs_local.gain",
                   "selected.best_val.test.balanced_accuracy", "heterogeneity.label_tv_mean",
                   "client_store_bytes", "wall_time_s"),
          site_wins=(SiteWins("method", "local"),
                     SiteWins("method", "local", field="sites_finetuned")),
          paired=(Paired(reference={"method": "local"}, metrics=SITES),
                  Paired(reference={"method": "fedavg"}, metrics=SITES)),
          figures=(BarFigure(x="method", color="partition",
                             metrics=("sites.balanced_accuracy.mean",
                                      "sites.balanced_accuracy.worst")),)),
      description=__doc__,
  )
