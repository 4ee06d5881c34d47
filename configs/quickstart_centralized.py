"""Centralized counterpart of configs/quickstart.py on the same samples.

  python launch/main.py --config=configs/quickstart_centralized.py --workdir=runs/central

Same data, model, client optimizer and number of rounds. The pooled training
set is one "client"; each round runs clients_per_round * local_steps SGD steps
of the same batch size, so a round spends exactly as many sample-gradient
evaluations as a quickstart round. ``summary.json`` of both runs compare directly.
"""

from configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.algorithm.name = "centralized"
  c.partition.kind = "iid"
  c.partition.min_size = 1
  c.fl.local_steps = c.fl.clients_per_round * c.fl.local_steps
  c.fl.num_clients = 1
  c.fl.clients_per_round = 1
  return c
