"""One algorithm under strong label skew: PneumoniaMNIST, Dirichlet alpha=0.1, 20 clients.

  python launch/main.py --config=configs/algorithms.py:fedprox --workdir=runs/fedprox

The part after ``:`` names the algorithm (fedavg, fedavgm, fedadam, fedyogi,
fedadagrad, fedprox, scaffold, feddyn, fedbn, fedsam, fedasam, fedexp, fedper,
fedrep, ditto, apfl, local; add
``--config.algorithm.swa=True`` to any). Everything else is shared, so the
runs compare directly: small CNN (FedBN needs BatchNorm: ``resnet8_bn``),
10 of 20 clients per round, 5 local SGD steps of 64 (lr 0.1), 40 rounds. A few minutes
each on 2 CPU cores (FedBN's ResNet and FedSAM's double gradient take longer).
"""

from fedjax_med.algorithms import registry
from fedjax_med.configs import base

# Settings pinned per algorithm (the README's table was measured with these; they
# equal the registry defaults today); everything not listed is base.py's default.
PINNED = {
    "fedavgm": {"fl.server_lr": 1.0, "fl.server_momentum": 0.9},
    "fedadam": {"fl.server_lr": 0.01},
    "fedyogi": {"fl.server_lr": 0.01},
    "fedadagrad": {"fl.server_lr": 0.05},
    "fedprox": {"algorithm.fedprox.mu": 0.01},
    "feddyn": {"algorithm.feddyn.alpha": 0.01},
    "fedbn": {"model.name": "resnet8_bn"},  # FedBN needs BatchNorm
    "fedsam": {"algorithm.fedsam.rho": 0.05},
    "fedasam": {"algorithm.fedasam.rho": 0.5},
}
# One preset per federated algorithm of the registry.
PRESETS = {name: PINNED.get(name, {}) for name in registry.names() if registry.get(name).federated}


def get_config(name: str = "fedavg"):
  if name not in PRESETS:
    raise ValueError(f"unknown algorithm preset {name!r}; choose one of {sorted(PRESETS)}")
  c = base.get_config()
  c.algorithm.name = name
  c.data.name = "pneumoniamnist"
  c.data.augment = "shift"
  c.partition.kind = "dirichlet"
  c.partition.alpha = 0.1
  c.partition.min_size = 10
  c.model.name = "cnn"
  c.fl.rounds = 40
  c.fl.num_clients = 20
  c.fl.clients_per_round = 10
  c.fl.local_steps = 5
  c.fl.batch_size = 64
  c.fl.client_lr = 0.1
  c.eval.every = 10
  c.ckpt.every = 10
  return base.apply(c, PRESETS[name])
