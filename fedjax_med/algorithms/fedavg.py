"""Federated Averaging with a server optimizer (FedAvg / FedAvgM / FedAdam).

McMahan et al., "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS 2017; Reddi et al., "Adaptive Federated
Optimization", ICLR 2021 (server optimizers on the pseudo-gradient).

One round: every client starts from the server params and runs S steps of the
client optimizer (fresh state each round); ``delta_c = server - client_c``;
the pseudo-gradient is the weight-averaged delta; the server applies
``server_optimizer`` to it. With ``optax.sgd(1.0)`` on the server this is plain
FedAvg; with momentum it is FedAvgM, with ``optax.adam`` FedAdam.
"""

from __future__ import annotations

import functools

import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import base, local


def fedavg(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    client_chunk_size: int | None = None,
    local_unroll: int | bool = 1,
    compressor: compression.Compressor | None = None,
    error_feedback_clients: int = 0,
) -> types.FederatedAlgorithm:
  """Builds FedAvg as an ``(init, round)`` pair.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``; see ``types.LossFn``.
    client_optimizer: optax transform run for S local steps on each client.
    server_optimizer: optax transform applied to the averaged delta.
    client_chunk_size: clients vectorized together (``None`` = all at once).
    local_unroll: ``lax.scan`` unroll of the local steps.
    compressor: compress each client's delta (``fedjax_med.compression``).
    error_feedback_clients: N > 0 keeps an error-feedback residual per client.

  Returns:
    ``FederatedAlgorithm(init, round)``; ``round(state, clients)`` is pure and
    jit-able as one function.
  """
  client_fn = functools.partial(local.local_train, loss_fn, client_optimizer, unroll=local_unroll)
  return base.averaging_algorithm(
      client_fn,
      server_optimizer,
      client_chunk_size=client_chunk_size,
      compressor=compressor,
      error_feedback_clients=error_feedback_clients,
  )
