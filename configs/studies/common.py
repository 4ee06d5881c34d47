"""Axes and settings shared by the studies (configs/studies/*.py).

Every study starts from configs/quickstart.py (small CNN, 28 px, random-shift
augmentation, SGD lr 0.1, B=64) and changes what its question needs. The
``cpu`` presets are sized for a 2-core machine (<= 60 min each, 28 px, small
models); the ``full`` presets are meant for a GPU (more rounds, seeds and
larger models).
"""

from fedjax_med.algorithms import registry

BASE = "configs/quickstart.py"

DATASETS = {
    "pneumonia": {"data.name": "pneumoniamnist"},
    "breast": {"data.name": "breastmnist"},
    "retina": {"data.name": "retinamnist"},  # RGB, 5 ordinal grades: the harder task
}

# Label-skew partitions of the training split over fl.num_clients clients.
# per_client Dirichlet (Hsu et al. 2019): equal sizes, class mix ~ Dir(alpha * p), p the global
# class frequencies (measured skew of each run: summary.json "heterogeneity").
PARTITIONS = {
    "iid": {"partition.kind": "iid"},
    **{f"a{a:g}": {"partition.kind": "dirichlet", "partition.alpha": a}
       for a in (0.05, 0.1, 0.5, 1.0, 10.0, 1000.0)},
    # quantity skew: IID labels, log-normal client sizes (sigma 1)
    "quantity": {"partition.kind": "quantity", "partition.quantity_kind": "lognormal",
                 "partition.quantity_sigma": 1.0},
    # site feature skew: IID labels, each client's images through its own
    # simulated scanner (fedjax_med/data/site_shift.py, strength 1 = strong)
    "site": {"partition.kind": "iid", "partition.site_shift": 1.0},
}

# Every federated algorithm of fedjax_med.algorithms.registry as an override set. The
# hyper-parameters the studies ran with are pinned (they equal today's registry
# defaults; pinned so that a later change of a default does not change a study).
PINNED = {
    "fedprox": {"algorithm.fedprox.mu": 0.01},
    "fedadam": {"fl.server_lr": 0.01},
    "fedsam": {"algorithm.fedsam.rho": 0.05},
    "fedasam": {"algorithm.fedasam.rho": 0.5},
}
ALGORITHMS = {name: {"algorithm.name": name, **PINNED.get(name, {})}
              for name in registry.names() if registry.get(name).federated}


def centralized(clients_per_round: int, local_steps: int) -> dict:
  """Pooled training on the same number of sample-gradient evaluations per round.

  The sites' training shares (of the partition the grid sets) are pooled into one
  client, which runs ``clients_per_round * local_steps`` SGD steps of the same
  batch size per round; the sites' held-out shares are the same as the
  federated runs', so per-site results compare directly.
  """
  return {"algorithm.name": "centralized", "fl.clients_per_round": 1,
          "fl.local_steps": clients_per_round * local_steps}


def pick(table: dict, names) -> dict:
  return {n: table[n] for n in names}


def check_preset(preset: str, presets=("cpu", "full")) -> str:
  if preset not in presets:
    raise ValueError(f"unknown preset {preset!r}; choose one of {list(presets)}")
  return preset
