"""Centralized training in the round API: the baseline for federated runs.

``centralized(loss_fn, optimizer)`` is an ``(init, round)`` pair like
``fedavg``; its round treats the ``C x S`` batches of a ``ClientBatch`` as one
sequence of C*S optimizer steps on a single model, with an optimizer state that
persists across rounds. Fed with the pooled training set (one "client") and
the same number of examples per round as a federated run, it spends the same
number of sample-gradient evaluations, so the two runs compare directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import aggregate, base, local


def centralized(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation | None = None,
    *,
    plan: base.RoundPlan = base.RoundPlan(),
) -> types.FederatedAlgorithm:
  """Builds plain minibatch training as an ``(init, round)`` pair.

  Args:
    loss_fn: ``loss_fn(params, batch, rng) -> (loss, aux)``.
    client_optimizer: the optax transform of the one model; its state lives in
      ``ServerState.opt_state`` and persists across rounds.
    server_optimizer: unused (there is no server step); accepted so that every
      builder has the same signature.
    plan: ``plan.unroll``, the lr schedule and ``plan.record_dp`` (DP-SGD) apply;
      nothing is sent, so a compressor is an error.

  Returns:
    ``FederatedAlgorithm``; ``metrics.client_loss`` is [C, S] in step order,
    ``update_norm`` [C] is the norm of the whole round's change (same for all C).
  """
  del server_optimizer
  base.check_plan(plan, "centralized", stateful=False, privacy=("record",))
  if plan.compressor is not None or plan.error_feedback:
    raise ValueError("centralized training sends nothing: build it without a compressor")
  optimizer = client_optimizer

  def init_fn(params, rng):
    return base.init_state(params, optimizer, rng)

  def round_fn(state: types.ServerState, clients: types.ClientBatch):
    num_clients, num_steps = clients.mask.shape[:2]
    data = jax.tree.map(
        lambda x: x.reshape((num_clients * num_steps,) + x.shape[2:]), local.client_data(clients)
    )
    # Padding clients (weight 0) contribute no steps.
    real = jnp.repeat(clients.weight > 0, num_steps)
    data["mask"] = data["mask"] & real[:, None]
    keys = jax.random.split(jax.random.fold_in(state.rng, state.round), num_clients * num_steps)

    options = base.train_options(plan, loss_fn, state)
    if options.pop("every_step", False):  # DP-SGD: every step of the real "client" runs
      options["active"] = real
    params, opt_state, losses, has_data = local.run_steps(
        loss_fn, optimizer, state.params, state.opt_state, data, keys, **options)
    # A round whose loss or new state is non-finite is dropped as a whole (the one model
    # is every "client"): the model and optimizer state stay as they were.
    ok = local.finite_rows(jax.tree.map(lambda x: x[None], (losses, params, opt_state)))[0]
    params, opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old),
                                     (params, opt_state), (state.params, state.opt_state))
    change = aggregate.tree_norm(jax.tree.map(jnp.subtract, state.params, params))
    metrics = types.RoundMetrics(
        client_loss=losses.reshape(num_clients, num_steps),
        client_steps=jnp.sum(has_data.reshape(num_clients, num_steps).astype(jnp.int32), axis=1),
        update_norm=jnp.full((num_clients,), change),
        pseudo_grad_norm=change,
        dropped=(clients.weight > 0) & ~ok,
    )
    return types.ServerState(params, opt_state, state.round + 1, state.rng), metrics

  return types.FederatedAlgorithm(init_fn, round_fn)
