"""Study 4: does federated averaging land in flatter or sharper minima than centralized SGD?

  python launch/sweep.py --study=configs/studies/implicit_regularization.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/implicit_regularization.py:cpu

At one budget of sample-gradient evaluations (every client runs T local steps
in total, so S local steps per round means T / S rounds; centralized SGD runs
the same 10 T steps on the pooled data): FedAvg with S in {1, 5, 20}, FedSAM,
FedASAM and FedAvg + server SWA (S=5), on IID and Dirichlet(0.1) clients.
Every run measures, on a fixed 500-example training subset in eval mode, at
its last round: lambda_max (Lanczos), Hessian trace (Hutchinson, 20 probes),
Keskar epsilon-sharpness (1e-3) and the generalization gap (test loss - train
loss). Post steps scan loss landscapes (1D/2D, filter-normalized) around the
seed-0 models and the straight line from each FedAvg model to the centralized
one.

cpu: small CNN, PneumoniaMNIST, T=100 (S=1: 100 rounds, S=5: 20, S=20: 5), seeds 0-2.
full: T=500, both datasets, seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import BarFigure, Post, ReportSpec, Study


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  total = 100 if cpu else 500  # local steps per client over the whole run
  clients = 10

  def fed(steps, **extra):
    rounds = total // steps
    return {"fl.local_steps": steps, "fl.rounds": rounds, "eval.every": max(1, rounds // 5),
            "ckpt.every": rounds, "analysis.every": rounds, **extra}

  methods = {
      "fedavg_S1": fed(1),
      "fedavg_S5": fed(5),
      "fedavg_S20": fed(20),
      "fedsam_S5": fed(5, **common.ALGORITHMS["fedsam"]),
      "fedasam_S5": fed(5, **common.ALGORITHMS["fedasam"]),
      "swa_S5": fed(5, **{"algorithm.swa": True}),
  }
  central_rounds = total // 5
  central = {**common.centralized(clients, 5), "fl.rounds": central_rounds,
             "eval.every": central_rounds // 5, "ckpt.every": central_rounds,
             "analysis.every": central_rounds}
  fixed = {"fl.num_clients": clients, "fl.clients_per_round": clients, "analysis.examples": 500,
           "analysis.probes": 20, "analysis.lanczos_iters": 20, "analysis.eps": 1e-3}
  data = common.pick(common.DATASETS, ("pneumonia",)) if cpu else common.DATASETS
  grids = (
      {"data": data, "partition": common.pick(common.PARTITIONS, ("iid", "a0.1")),
       "method": methods},
      {"data": data, "partition": {"pooled": {}}, "method": {"centralized": central}},
  )
  post = []
  for d in data:
    c = f"data-{d}+partition-pooled+method-centralized+seed-0"
    post.append(Post(f"{d}_centralized", (
        "analysis/landscape.py", f"--workdirs={{sweep}}/{c}", "--grid=15", "--examples=500",
        f"--output_dir={{sweep}}/landscape/{d}_centralized"),
        f"{{sweep}}/landscape/{d}_centralized/landscape.json", (c,)))
    for part, method in (("iid", "fedavg_S5"), ("a0.1", "fedavg_S5"), ("a0.1", "fedavg_S20"),
                         ("a0.1", "fedsam_S5")):
      f = f"data-{d}+partition-{part}+method-{method}+seed-0"
      name = f"{d}_{part}_{method}_vs_centralized"
      post.append(Post(name, (
          "analysis/landscape.py", f"--workdirs={{sweep}}/{f},{{sweep}}/{c}", "--grid=15",
          "--examples=500", f"--output_dir={{sweep}}/landscape/{name}"),
          f"{{sweep}}/landscape/{name}/landscape.json", (f, c)))
  return Study(
      name="implicit_regularization", preset=preset, base=common.BASE, grids=grids,
      seeds=(0, 1, 2) if cpu else (0, 1, 2, 3, 4), fixed=fixed, post=tuple(post),
      # The post steps' landscape plots and table are added to the report by themselves.
      report=ReportSpec(
          table=("data", "partition", "method"),
          metrics=("test.accuracy", "test.auc", "analysis.loss", "analysis.lambda_max",
                   "analysis.trace", "analysis.eps_sharpness", "gap.loss"),
          figures=(BarFigure(x="method", color="partition",
                             metrics=("analysis.lambda_max", "analysis.trace",
                                      "analysis.eps_sharpness", "gap.loss")),)),
      description=__doc__,
  )
