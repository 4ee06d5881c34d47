"""Study 3: which architectures stay robust under label skew.

  python launch/sweep.py --study=configs/studies/architectures.py:cpu --jobs=2
  python analysis/study_report.py --study=configs/studies/architectures.py:cpu

ResNet with BatchNorm / GroupNorm / LayerNorm, a ViT and a ConvNeXt, each
trained centrally and with FedAvg on IID, Dirichlet(0.1) and Dirichlet(0.05)
clients. The report gives the accuracy drop from IID to non-IID per
architecture, relative to its own centralized accuracy (heat map).

cpu: ResNet-8 (BN/GN/LN), vit_xs and convnext_xs (the zoo's CPU-sized ViT and
ConvNeXt: ~20 MFLOPs like ResNet-8; ViT-Ti and ConvNeXt-atto cost 25x and 11x
a CNN round here), PneumoniaMNIST, 10 clients, 5 per round, S=5, B=32, 16
rounds, seeds 0-2.
full: ResNet-18 (BN/GN/LN), vit_ti, convnext_atto, both datasets, 10 clients,
all per round, S=5, B=64, 100 rounds, seeds 0-4.
"""

from fedjax_med.configs.studies import common
from fedjax_med.studies.specs import BarFigure, HeatmapFigure, Relative, ReportSpec, Study


def get_study(preset: str = "cpu") -> Study:
  common.check_preset(preset)
  cpu = preset == "cpu"
  resnet = "resnet8" if cpu else "resnet18"
  models = {
      f"{resnet}_bn": {"model.name": resnet, "model.norm": "batch"},
      f"{resnet}_gn": {"model.name": resnet, "model.norm": "group"},
      f"{resnet}_ln": {"model.name": resnet, "model.norm": "layer"},
      "vit_xs" if cpu else "vit_ti": {"model.name": "vit_xs" if cpu else "vit_ti"},
      "convnext_xs" if cpu else "convnext_atto": {
          "model.name": "convnext_xs" if cpu else "convnext_atto"},
  }
  clients, per_round, steps = 10, (5 if cpu else 10), 5
  fixed = {"fl.num_clients": clients, "fl.clients_per_round": per_round, "fl.local_steps": steps,
           "fl.batch_size": 32 if cpu else 64, "fl.rounds": 16 if cpu else 100,
           "eval.every": 4, "ckpt.every": 10}
  settings = {"centralized": common.centralized(per_round, steps),
              **{f"fedavg_{k}": common.PARTITIONS[k] for k in ("iid", "a0.1", "a0.05")}}
  data = common.pick(common.DATASETS, ("pneumonia",)) if cpu else common.DATASETS
  return Study(
      name="architectures", preset=preset, base=common.BASE,
      grids=({"data": data, "model": models, "setting": settings},),
      seeds=(0, 1, 2) if cpu else (0, 1, 2, 3, 4), fixed=fixed,
      report=ReportSpec(
          table=("data", "model", "setting"),
          relative=Relative(axis="setting", reference="centralized"),
          figures=(HeatmapFigure(rows="model", cols="setting", metric="test.accuracy",
                                 relative=True),
                   BarFigure(x="model", color="setting", metrics=("test.accuracy",)))),
      description=__doc__,
  )
