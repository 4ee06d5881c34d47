"""Centralized counterpart of configs/quickstart.py on the same samples.

  python launch/main.py --config=configs/quickstart_centralized.py --workdir=runs/central

Same data, model, client optimizer and number of rounds. The same 10 sites
(the quickstart's partition) keep the same held-out shares; their training
shares are pooled into one "client", and each round runs clients_per_round *
local_steps SGD steps of the same batch size, so a round spends exactly as
many sample-gradient evaluations as a quickstart round and both runs are
evaluated on the same per-site held-out data. ``summary.json`` of both runs
compare directly.
"""

from fedjax_med.configs import quickstart


def get_config():
  c = quickstart.get_config()
  c.algorithm.name = "centralized"
  c.fl.local_steps = c.fl.clients_per_round * c.fl.local_steps
  c.fl.clients_per_round = 1  # the pooled training shares of all fl.num_clients sites
  return c
