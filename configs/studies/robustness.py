"""Study 7: does a robust aggregator keep malicious sites from spoiling the model, and what
does it cost when nobody attacks?

  python launch/sweep.py --study=configs/studies/robustness.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/robustness.py:cpu --output=docs/results

FedAvg on 10 sites, all taking part in every round, aggregated with the
weighted mean (the baseline), the coordinate-wise median, multi-Krum (f = 2,
the mean of the n - f best-scored deltas) or the geometric median (RFA, 10
Weiszfeld steps).
Two grids:

- **no attack**, IID and Dirichlet(0.5) sites: what robust aggregation costs
  honest sites, and how much more under label skew (median and Krum are known
  to discard the updates of sites that differ, which honest heterogeneous sites
  do);
- **20 % malicious sites** (2 of 10, a seeded set per seed: summary.json
  ``attack.malicious``), IID sites, two attacks: ``sign_flip`` with scale 5
  (each sends -5 x its own update: the weighted mean of 8 honest and 2 such
  updates points against the honest direction) and ``alie`` (Baruch et al.
  2019: mean - z std of the honest updates, z = 0.25 for 2 of 10: small enough
  to pass the statistical defenses).

The report gives the validation-selected test balanced accuracy and AUC (and
the final test accuracy) per (partition, attack, aggregator), the drop from the
same aggregator's no-attack run of the same seed (``relative.drop``), and two
families of paired tests (by seed, Holm): every attack against no attack (same
aggregator), every robust aggregator against the mean (same partition and
attack).

cpu: small CNN, 28 px, PneumoniaMNIST, S=5, B=64, 10 rounds, evaluated every 2,
seeds 0-4 (80 runs; sized to share 2 cores with the privacy study; label flipping,
data poisoning, is in the full preset).
full: PneumoniaMNIST and RetinaMNIST, IID and Dirichlet(0.5) under every attack,
malicious fractions 0.1 / 0.2 / 0.3, plus the trimmed mean (beta = max(0.2,
fraction)), Krum, norm bounding, Gaussian and IPM attacks, 30 rounds, seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import BarFigure, Paired, Relative, ReportSpec, Study

SELECTED = ("selected.best_val.test.balanced_accuracy", "selected.best_val.test.auc")


def aggregators(fraction: float, full: bool) -> dict:
  """The aggregators compared, each tolerating ``fraction`` of 10 sites (config checks it)."""
  f = max(1, round(10 * fraction))
  aggs = {
      "mean": {"aggregator.name": "mean"},
      "median": {"aggregator.name": "median"},
      "multikrum": {"aggregator.name": "multikrum", "aggregator.num_byzantine": f},
      "geometric_median": {"aggregator.name": "geometric_median", "aggregator.gm_iters": 10},
  }
  if full:
    aggs["trimmed_mean"] = {"aggregator.name": "trimmed_mean",
                            "aggregator.trim_fraction": max(0.2, fraction)}
    aggs["krum"] = {"aggregator.name": "krum", "aggregator.num_byzantine": f}
    aggs["norm_bound"] = {"aggregator.name": "norm_bound", "aggregator.norm_bound": 1.0}
  return aggs


ATTACKS = {
    "label_flip": {"attack.kind": "label_flip"},
    "sign_flip": {"attack.kind": "sign_flip", "attack.scale": 5.0},
    "alie": {"attack.kind": "alie"},
    "gaussian": {"attack.kind": "gaussian", "attack.scale": 1.0},
    "ipm": {"attack.kind": "ipm", "attack.scale": 0.1},
}


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  fixed = {"fl.num_clients": 10, "fl.clients_per_round": 10, "fl.local_steps": 5,
           "fl.rounds": 10 if cpu else 30, "eval.every": 2 if cpu else 5,
           "ckpt.every": 10}
  data = common.pick(common.DATASETS, ("pneumonia",) if cpu else ("pneumonia", "retina"))
  none = {"none": {"attack.kind": "none"}}
  if cpu:
    grids = (
        {"data": data, "partition": common.pick(common.PARTITIONS, ("iid", "a0.5")),
         "attack": none, "aggregator": aggregators(0.2, False)},
        {"data": data, "partition": common.pick(common.PARTITIONS, ("iid",)),
         "attack": {k: {**ATTACKS[k], "attack.fraction": 0.2}
                    for k in ("sign_flip", "alie")},
         "aggregator": aggregators(0.2, False)},
    )
  else:
    grids = [{"data": data, "partition": common.pick(common.PARTITIONS, ("iid", "a0.5")),
              "attack": none, "aggregator": aggregators(0.3, True)}]
    for fraction in (0.1, 0.2, 0.3):
      grids.append({
          "data": data, "partition": common.pick(common.PARTITIONS, ("iid", "a0.5")),
          "attack": {f"{k}_f{fraction:g}": {**v, "attack.fraction": fraction}
                     for k, v in ATTACKS.items()},
          # one f / beta for every fraction: the no-attack reference must be the same rule
          "aggregator": aggregators(0.3, True)})
    grids = tuple(grids)
  return Study(
      name="robustness", preset=preset, base=common.BASE, grids=grids,
      seeds=(0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "partition", "attack", "aggregator"),
          metrics=(*SELECTED, "test.accuracy", "relative.drop", "sites.balanced_accuracy.mean",
                   "sites.balanced_accuracy.worst", "heterogeneity.label_tv_mean",
                   "wall_time_s"),
          relative=Relative(axis="attack", reference="none"),
          paired=(Paired(reference={"attack": "none"}, metrics=SELECTED),
                  Paired(reference={"aggregator": "mean"}, metrics=SELECTED)),
          figures=(BarFigure(x="aggregator", color="attack", metrics=SELECTED),)),
      description=__doc__,
  )
