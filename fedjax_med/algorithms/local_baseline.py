"""The ``local`` baseline: every site trains alone on its own data, nothing is shared.

FLamby and FL-bench report it beside FedAvg: it answers "does joining the
federation give my patients a better model than training alone?". Each client
keeps its own model as its state row (``state.client_state.algorithm``,
``[N, ...]``, all starting from the same initial model) and trains it for S
steps whenever it is sampled, so it spends the same budget as a federated run.
Evaluate it with ``client_params(state, c)`` on each site's own held-out data.
``state.params`` is only the weighted average of the models trained in the
last round (a by-product for the pooled test numbers, not a model any site
would use).
"""

from __future__ import annotations

import jax
import optax

from fedjax_med import types
from fedjax_med.algorithms import base, local


def local_baseline(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    *,
    plan: base.RoundPlan,
) -> types.FederatedAlgorithm:
  """Builds the local-only baseline over ``plan.num_clients`` sites.

  ``server_optimizer`` is unused (the average is taken as is); a compressor is an error.
  """
  del server_optimizer
  base.check_plan(plan, "local", stateful=True, privacy=("record",))
  if plan.compressor is not None:
    raise ValueError("local training sends nothing: build it without a compressor")
  average = optax.sgd(1.0)  # server params <- the weighted mean of this round's local models

  def init_fn(params, rng) -> types.ServerState:
    return base.init_state(params, average, rng, plan, client_row=lambda p: p)

  def client_fn(state, data, own, key):
    # nothing comes from the server but the round (the learning-rate schedule)
    res = local.local_train(loss_fn, client_optimizer, own, data, key,
                            **base.train_options(plan, loss_fn, state))
    return res, res.params

  def client_params(state: types.ServerState, client: int) -> types.Params:
    return jax.tree.map(lambda x: x[client], state.client_state.algorithm)

  round_fn = base.federated_round(client_fn, average, plan)
  return types.FederatedAlgorithm(init_fn, round_fn, client_params)
