"""Ditto: a personal model per client, pulled towards the global one.

Li et al., "Ditto: Fair and Robust Federated Learning Through
Personalization", ICML 2021 (Algorithm 1). Every round a sampled client
(1) runs FedAvg's S local steps from the server model and uploads that delta,
and (2) runs S steps on its personal model ``v_c`` (a row of the per-client
store, all starting from the initial model) on
``f_c(v) + lam / 2 ||v - w||^2``, ``w`` the server model at the start of the
round, over the same S batches. ``lam = 0`` is local training alone; large
``lam`` pulls ``v_c`` to the global model. The global model is FedAvg's (a
client whose personal update fails is dropped whole, its global delta too);
``client_params(state, c)`` is ``v_c``. A round costs two local
trainings per client (``bench/algorithm_speed.py`` measures it against FedAvg)
and the store holds a whole model per client (``client_store.nbytes``).
"""

from __future__ import annotations

import jax
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local
from fedjax_med.algorithms.fedprox import proximal_loss

# fold_in stream of a client's key for its personal steps (the global steps use the key itself,
# so the global model is FedAvg's bit for bit with the same keys).
PERSONAL_STREAM = 0xD1770


def ditto(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    lam: float,
    plan: base.RoundPlan,
) -> types.FederatedAlgorithm:
  """Builds Ditto with proximal strength ``lam`` (on the trainable ``params`` only)."""
  base.check_plan(plan, "ditto", stateful=True)

  def init_fn(params, rng) -> types.ServerState:
    return base.init_state(params, server_optimizer, rng, plan, client_row=lambda p: p)

  def client_fn(state, data, own, key):
    options = {"unroll": plan.unroll, "lr_scale": base.lr_scale(plan, state.round)}
    res = local.local_train(loss_fn, client_optimizer, state.params, data, key, **options)
    personal = local.local_train(proximal_loss(loss_fn, state.params, lam), client_optimizer,
                                 own, data, jax.random.fold_in(key, PERSONAL_STREAM), **options)
    return res, personal.params

  def client_params(state: types.ServerState, client: int) -> types.Params:
    return jax.tree.map(lambda x: x[client], state.client_state.algorithm)

  round_fn = base.federated_round(client_fn, server_optimizer, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, client_params)
