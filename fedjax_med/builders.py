"""From a validated config to optimizers and an algorithm (the config edge).

``train.py`` calls these; library code below them takes plain arguments.
``config.algorithm.name`` selects the algorithm; its hyper-parameters live in
``config.algorithm.*`` and the optimizers in ``config.fl.*``.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from fedjax_med import algorithms, compression, engine, types

# name -> server optimizer forced by the name (None: use fl.server_opt).
SERVER_OPT_OF = {
    "fedavg": None,
    "fedavgm": "sgd_momentum",
    "fedadam": "adam",
    "fedyogi": "yogi",
    "fedadagrad": "adagrad",
    "fedprox": None,
    "scaffold": None,
    "feddyn": None,
    "fedbn": None,
    "fedsam": None,
    "fedasam": None,
    "centralized": None,
}
ALGORITHMS = tuple(SERVER_OPT_OF)


def make_client_optimizer(lr: float, momentum: float, weight_decay: float):
  """SGD (with optional momentum) plus L2 weight decay on the ``params`` collection only."""
  sgd = optax.sgd(lr, momentum=momentum or None)
  if not weight_decay:
    return sgd

  def mask(tree):  # never decay BatchNorm statistics
    return {k: jax.tree.map(lambda _, is_params=(k == "params"): is_params, v) for k, v in tree.items()}

  return optax.chain(optax.masked(optax.add_decayed_weights(weight_decay), mask), sgd)


def make_server_optimizer(name: str, lr, momentum: float = 0.0, eps: float = 1e-3):
  """``sgd`` (``momentum`` > 0: FedAvgM), ``sgd_momentum`` (0.9 unless given), or the
  adaptive ``adam`` / ``yogi`` / ``adagrad`` of Reddi et al. 2021 with ``eps`` = tau.
  ``lr`` may be an optax schedule over rounds."""
  if name == "sgd":
    return optax.sgd(lr, momentum=momentum or None)
  if name == "sgd_momentum":
    return optax.sgd(lr, momentum=momentum or 0.9)
  if name == "adam":
    return optax.adam(lr, eps=eps)
  if name == "yogi":
    return optax.yogi(lr, eps=eps)
  if name == "adagrad":
    return optax.adagrad(lr, eps=eps)
  raise ValueError(f"unknown server optimizer {name!r}")


def make_algorithm(
    config: ml_collections.ConfigDict, loss_fn: types.LossFn, eng: engine.Engine
) -> types.FederatedAlgorithm:
  """The ``(init, round)`` pair that ``config.algorithm`` names."""
  fl, a = config.fl, config.algorithm
  name = a.name
  client_tx = make_client_optimizer(fl.client_lr, fl.client_momentum, fl.client_weight_decay)
  if name == "centralized":
    return algorithms.centralized(loss_fn, client_tx, unroll=eng.local_unroll)
  server_lr = fl.server_lr
  if fl.server_lr_schedule == "cosine":
    server_lr = optax.cosine_decay_schedule(fl.server_lr, fl.rounds, alpha=fl.server_lr_min_ratio)
  if a.swa:  # the cyclical SWA schedule replaces any other
    start = swa_start_round(config)
    server_lr = algorithms.cyclical_lr(fl.server_lr, fl.server_lr * a.swa_lr_ratio,
                                       start_round=start, period=a.swa_period)
  server_tx = make_server_optimizer(SERVER_OPT_OF[name] or fl.server_opt, server_lr,
                                    fl.server_momentum, a.server_eps)
  common = dict(client_chunk_size=eng.client_chunk_size, local_unroll=eng.local_unroll,
                compressor=make_compressor(config))
  ef = bool(config.comm.error_feedback) and common["compressor"] is not None
  stateless = dict(common, error_feedback_clients=fl.num_clients if ef else 0)
  stateful = dict(common, error_feedback=ef)
  if name in ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad"):
    alg = algorithms.fedavg(loss_fn, client_tx, server_tx, **stateless)
  elif name == "fedprox":
    alg = algorithms.fedprox(loss_fn, client_tx, server_tx, mu=a.mu, **stateless)
  elif name in ("fedsam", "fedasam"):
    alg = algorithms.fedsam(loss_fn, client_tx, server_tx, rho=a.rho, adaptive=name == "fedasam",
                            eta=a.asam_eta, **stateless)
  elif name == "scaffold":
    alg = algorithms.scaffold(loss_fn, fl.client_lr, server_tx, num_clients=fl.num_clients,
                              **stateful)
  elif name == "feddyn":
    alg = algorithms.feddyn(loss_fn, client_tx, alpha=a.feddyn_alpha, num_clients=fl.num_clients,
                            server_optimizer=server_tx, **stateful)
  elif name == "fedbn":
    alg = algorithms.fedbn(loss_fn, client_tx, server_tx, num_clients=fl.num_clients, **stateful)
  else:
    raise ValueError(f"unknown algorithm {name!r}")
  if a.swa:
    alg = algorithms.swa(alg, start_round=swa_start_round(config), period=a.swa_period)
  return alg


def make_compressor(config: ml_collections.ConfigDict) -> compression.Compressor | None:
  """The upload compressor of ``config.comm`` (None for ``"none"``)."""
  c = config.comm
  return compression.make(c.compressor, bits=c.bits, fraction=c.fraction, block=c.block,
                          error_feedback=c.error_feedback)


def swa_start_round(config: ml_collections.ConfigDict) -> int:
  """First averaged round: the last ``algorithm.swa_fraction`` of ``fl.rounds``."""
  rounds = config.fl.rounds
  return max(1, rounds - int(round(config.algorithm.swa_fraction * rounds)) + 1)
