"""Study 4: does federated averaging land in flatter or sharper minima than centralized SGD?

  python launch/sweep.py --study=configs/studies/implicit_regularization.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/implicit_regularization.py:cpu --output=docs/results

At one budget of sample-gradient evaluations (every client runs T local steps
in total, so S local steps per round means T / S rounds; centralized SGD runs
the same 10 T steps on the pooled data): FedAvg with S in {1, 5, 20}, FedSAM,
FedASAM and FedAvg + server SWA (S=5, a cyclical server lr with a 5-round cycle
averaged over the last quarter of the run; a 1-round cycle pinned the lr at its
minimum in the pilot), on IID and Dirichlet(0.1) clients; and two pooled
baselines at the same budget: centralized SGD (batch B, 10 S steps per round)
and large-batch SGD (batch 10 B, S steps per round: the update S=1 FedAvg makes
with IID clients, so it separates the effect of local steps from batch size).
Every run measures, on a fixed 500-example training subset in eval mode, at
its last round: lambda_max (Lanczos), Hessian trace (Hutchinson, 20 probes),
Keskar epsilon-sharpness (1e-3), the generalization gap (test loss - train
loss) and ``stability_ratio`` = lambda_max * lr / 2 (>= 1: above the edge of
stability 2 / lr of gradient descent at the client lr). Sharpness falls as a
model fits, so every run measures it 5 times and the ``matched.*`` columns read
it at the training loss that every run of the dataset reached
(``ReportSpec.matched``; ``matched.round`` says when). Post steps scan loss landscapes (1D/2D, filter-normalized) around
the seed-0 models and the straight line from each FedAvg model to the centralized
one from the same initialization (same seed) and from a different one (seed 1),
with two centralized runs from different initializations as the control: a low
barrier between models of one initialization says nothing on its own.

cpu: small CNN, PneumoniaMNIST, T=100 (S=1: 100 rounds, S=5: 20, S=20: 5), seeds 0-4,
without FedASAM and SWA (50 runs: about 60 min on 2 cores, --jobs=2; a run is 2-4 min,
half of it the five sharpness measurements).
full: T=500, both datasets, all methods, seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import BarFigure, Matched, Paired, Post, ReportSpec, Study

COMPARED = ("selected.best_val.test.balanced_accuracy", "matched.lambda_max", "matched.trace",
            "matched.eps_sharpness", "gap.loss")


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  total = 100 if cpu else 500  # local steps per client over the whole run
  clients = 10

  def fed(steps, **extra):
    rounds = total // steps
    return {"fl.local_steps": steps, "fl.rounds": rounds, "eval.every": max(1, rounds // 5),
            "ckpt.every": rounds, "analysis.every": max(1, rounds // 5), **extra}

  methods = {
      "fedavg_S1": fed(1),
      "fedavg_S5": fed(5),
      "fedavg_S20": fed(20),
      "fedsam_S5": fed(5, **common.ALGORITHMS["fedsam"]),
      "fedasam_S5": fed(5, **common.ALGORITHMS["fedasam"]),
      "swa_S5": fed(5, **{"algorithm.swa": True, "algorithm.swa_period": 5}),
  }
  if cpu:  # 2-core budget: FedSAM stands for the SAM family; FedASAM and SWA run in full
    del methods["fedasam_S5"], methods["swa_S5"]
  central_rounds = total // 5
  pooled = {"fl.rounds": central_rounds, "eval.every": central_rounds // 5,
            "ckpt.every": central_rounds, "analysis.every": central_rounds // 5}
  central = {**common.centralized(clients, 5), **pooled}
  # batch K*B, S steps per round: S=1 of it is S=1 FedAvg's step on IID clients
  large_batch = {**common.centralized(1, 5), "fl.batch_size": clients * 64, **pooled}
  fixed = {"fl.num_clients": clients, "fl.clients_per_round": clients, "analysis.examples": 500,
           "analysis.probes": 20, "analysis.lanczos_iters": 20, "analysis.eps": 1e-3}
  data = common.pick(common.DATASETS, ("pneumonia",)) if cpu else common.DATASETS
  grids = (
      {"data": data, "partition": common.pick(common.PARTITIONS, ("iid", "a0.1")),
       "method": methods},
      {"data": data, "partition": {"pooled": {}},
       "method": {"centralized": central, "large_batch": large_batch}},
  )
  post = []
  for d in data:
    c = f"data-{d}+partition-pooled+method-centralized+seed-0"
    c1 = f"data-{d}+partition-pooled+method-centralized+seed-1"  # another initialization

    def scan(name, *runs):
      return Post(name, (
          "analysis/landscape.py", "--workdirs=" + ",".join(f"{{sweep}}/{r}" for r in runs),
          "--grid=15", "--examples=500", f"--output_dir={{sweep}}/landscape/{name}"),
          f"{{sweep}}/landscape/{name}/landscape.json", runs)

    post.append(scan(f"{d}_centralized", c))
    post.append(scan(f"{d}_centralized_vs_centralized_other_init", c, c1))
    for part, method in (("iid", "fedavg_S5"), ("a0.1", "fedavg_S5"), ("a0.1", "fedavg_S20"),
                         ("a0.1", "fedsam_S5")):
      f = f"data-{d}+partition-{part}+method-{method}+seed-0"
      post.append(scan(f"{d}_{part}_{method}_vs_centralized", f, c))
      post.append(scan(f"{d}_{part}_{method}_vs_centralized_other_init", f, c1))
  return Study(
      name="implicit_regularization", preset=preset, base=common.BASE, grids=grids,
      seeds=(0, 1, 2, 3, 4), fixed=fixed, post=tuple(post),
      # The post steps' landscape plots and table are added to the report by themselves.
      report=ReportSpec(
          table=("data", "partition", "method"),
          metrics=("selected.best_val.test.balanced_accuracy", "test.auc", "analysis.loss",
                   "analysis.lambda_max", "analysis.stability_ratio", "matched.lambda_max",
                   "matched.trace", "matched.eps_sharpness", "matched.round", "gap.loss"),
          matched=Matched(within=("data",)),
          # paired by seed (the same initialization) against each pooled baseline
          paired=tuple(Paired(reference={"partition": "pooled", "method": m}, metrics=COMPARED)
                       for m in ("centralized", "large_batch")),
          figures=(BarFigure(x="method", color="partition",
                             metrics=("matched.lambda_max", "matched.trace",
                                      "matched.eps_sharpness", "gap.loss")),)),
      description=__doc__,
  )
