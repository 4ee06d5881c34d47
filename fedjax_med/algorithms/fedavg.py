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

import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local


def fedavg(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    plan: base.RoundPlan = base.RoundPlan(),
) -> types.FederatedAlgorithm:
  """Builds FedAvg as an ``(init, round)`` pair.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``; see ``types.LossFn``.
    client_optimizer: optax transform run for S local steps on each client.
    server_optimizer: optax transform applied to the aggregated delta.
    plan: chunking, unroll, compression and aggregation (``base.RoundPlan``).

  Returns:
    ``FederatedAlgorithm(init, round)``; ``round(state, clients)`` is pure and
    jit-able as one function.
  """

  def client_fn(state, data, key):
    return local.local_train(loss_fn, client_optimizer, state.params, data, key,
                             **base.train_options(plan, loss_fn, state))

  return base.stateless(client_fn, server_optimizer, plan, "fedavg")
