"""The round skeleton every federated algorithm shares (internal; see ``algorithms``).

``federated_round(client_fn, server_fn, server_optimizer, plan)`` is one round:

1. **gather** the sampled clients' rows of the per-client state
   (``ServerState.client_state``, stacked ``[N, ...]``);
2. **map** ``client_fn`` over the clients (vmapped, chunked: ``local.map_clients``),
   compressing each upload when the plan says so;
3. **scatter** the real clients' new rows back (a client whose result is non-finite
   is dropped: weight 0, its old row kept, counted in ``RoundMetrics.dropped``);
4. **aggregate** the deltas with the plan's :class:`~aggregators.Aggregator`;
5. **server update**: ``server_fn`` turns the aggregate into the
   pseudo-gradient (and updates the algorithm's server extras), then the server
   optimizer applies it.

An algorithm is a ``client_fn`` (what one client does from the server state and
its own row) and, if its server does more than average, a ``server_fn``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedjax_med import compression, types
from fedjax_med.algorithms import aggregate, aggregators, attacks, client_store, local
from fedjax_med.types import PyTree

if TYPE_CHECKING:  # the privacy package needs the optional jax-privacy (extra "privacy")
  from fedjax_med.privacy import dp_fedavg, dp_sgd


# fold_in stream of the round key that draws the attack's noise (``gaussian``).
ATTACK_STREAM = 0xA77AC


class RoundPlan(NamedTuple):
  """How a round executes: the same for every algorithm, chosen at the call site.

  Attributes:
    num_clients: N, the number of clients in the federation: rows of the
      per-client state (stateful algorithms, error feedback). 0 = unknown
      (stateless algorithms without error feedback need not know it).
    chunk_size: clients vectorized together (``None`` = all at once).
    unroll: ``lax.scan`` unroll of the local steps.
    compressor: compress each client's upload (``fedjax_med.compression``).
    error_feedback: keep each client's unsent residual (needs ``compressor``
      and ``num_clients``).
    aggregator: how the deltas become one pseudo-gradient (``aggregators``).
    client_lr_scale: ``round -> multiplier`` of the client learning rate in that
      round (traced; e.g. linear warmup then cosine decay over the whole run,
      ``fedjax_med.optimizers.client_lr_scale``). The client optimizer state
      starts fresh every round, so a schedule over the run cannot live in it;
      every algorithm scales its local updates by ``lr_scale(plan, round)``.
      ``None`` = a constant learning rate.
    record_dp: record-level DP: every local step is DP-SGD
      (``privacy.dp_sgd``; the algorithms that support it take their local
      options from :func:`train_options`).
    client_dp: client-level DP: DP-FedAvg's clipping of every client's delta,
      noise on the sum and fixed denominator replace the aggregator
      (``privacy.dp_fedavg``); clients weigh 1 each.
    attack: simulated malicious clients (``attacks``): their labels flipped
      before local training, or their updates replaced after it (then the
      round holds the stacked deltas, also under the mean).
  """

  num_clients: int = 0
  chunk_size: int | None = None
  unroll: int | bool = 1
  compressor: compression.Compressor | None = None
  error_feedback: bool = False
  aggregator: aggregators.Aggregator = aggregators.mean()
  client_lr_scale: Callable[[types.Array], types.Array] | None = None
  record_dp: dp_sgd.RecordDP | None = None
  client_dp: dp_fedavg.ClientDP | None = None
  attack: attacks.Attack | None = None


def lr_scale(plan: RoundPlan, round_: types.Array) -> types.Array | None:
  """The client learning-rate multiplier of round ``round_`` (``None``: no schedule)."""
  if plan.client_lr_scale is None:
    return None
  return jnp.asarray(plan.client_lr_scale(round_), jnp.float32)


def train_options(plan: RoundPlan, loss_fn: types.LossFn | None, state: types.ServerState) -> dict:
  """The keyword options of ``local.local_train`` that the plan sets for this round:
  ``unroll``, ``lr_scale`` and, with record-level DP, DP-SGD's gradient (from
  ``loss_fn``) with every step run."""
  options = {"unroll": plan.unroll, "lr_scale": lr_scale(plan, state.round)}
  if plan.record_dp is not None:
    from fedjax_med.privacy import dp_sgd  # optional extra

    options.update(grad_fn=dp_sgd.grad_fn(loss_fn, plan.record_dp), every_step=True)
  return options


def check_plan(plan: RoundPlan, algorithm: str, *, stateful: bool,
               privacy: tuple[str, ...] = ()) -> None:
  """Raises ``ValueError`` if ``plan`` cannot run ``algorithm``.

  ``privacy``: the DP levels the algorithm supports (``"record"``, ``"client"``).
  """
  for level, dp in (("record", plan.record_dp), ("client", plan.client_dp)):
    if dp is not None and level not in privacy:
      raise ValueError(f"{algorithm} does not support {level}-level differential privacy")
  if plan.client_dp is not None and not plan.aggregator.streaming:
    raise ValueError(f"{algorithm}: client-level DP replaces the aggregator; use the mean")
  if plan.client_dp is not None and plan.attack is not None and plan.attack.poisons_updates:
    raise ValueError(f"{algorithm}: a model-poisoning attack ({plan.attack.kind}) is not "
                     "simulated under client-level DP (it would act before the clipping)")
  if plan.attack is not None and plan.num_clients != plan.attack.num_clients:
    raise ValueError(f"{algorithm}: the attack is on {plan.attack.num_clients} clients but "
                     f"plan.num_clients={plan.num_clients}")
  if stateful and plan.num_clients < 1:
    raise ValueError(
      f"{algorithm} keeps a state row per client: pass plan=RoundPlan(num_clients=N, ...)"
    )
  if plan.error_feedback and (plan.compressor is None or plan.num_clients < 1):
    raise ValueError(
      f"{algorithm}: error feedback needs plan.compressor and plan.num_clients (one residual "
      "per client)"
    )


def raw_key(rng) -> types.Array:
  """A uint32 [2] key from a raw or typed JAX key (checkpointable as plain data)."""
  rng = jnp.asarray(rng)
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return rng.astype(jnp.uint32)


def init_state(
  params: types.Params,
  optimizer: optax.GradientTransformation,
  rng: types.PRNGKey,
  plan: RoundPlan = RoundPlan(),
  *,
  server: Callable[[types.Params], PyTree] | None = None,
  client_row: Callable[[types.Params], PyTree] | None = None,
) -> types.ServerState:
  """A float32 server state at round 0.

  Args:
    params: the initial model (cast to float32: the state fed to round 1 must
      have exactly the dtypes round 1 returns, or round 2 retraces).
    optimizer: the server optimizer (its state is initialized here).
    rng: the run's key (stored raw; round keys are derived from it).
    plan: with ``error_feedback``, every client gets a zero residual.
    server: ``params -> extras`` kept by the server (e.g. SCAFFOLD's ``c``).
    client_row: ``params -> row``: every client's initial state row.
  """
  params = aggregate.cast_floats(params)
  rows = None if client_row is None else client_row(params)
  residual = jax.tree.map(jnp.zeros_like, params) if plan.error_feedback else None
  client_state = None
  if rows is not None or residual is not None:
    client_state = client_store.init(types.ClientState(rows, residual), plan.num_clients)
  return types.ServerState(
    params=params,
    opt_state=aggregate.cast_floats(optimizer.init(params)),
    round=jnp.zeros((), jnp.int32),
    rng=raw_key(rng),
    server=None if server is None else server(params),
    client_state=client_state,
    privacy=None if plan.client_dp is None else _client_dp().init(plan.client_dp, params),
  )


def _client_dp():
  from fedjax_med.privacy import dp_fedavg  # optional extra

  return dp_fedavg


def zeros_init(
  server_optimizer: optax.GradientTransformation, plan: RoundPlan
) -> Callable[[types.Params, types.PRNGKey], types.ServerState]:
  """``init`` for algorithms whose server extras and client rows start as zeros like the params
  (SCAFFOLD's ``c`` / ``c_i``, FedDyn's ``h`` / ``g_i``)."""
  zeros = lambda params: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
  return lambda params, rng: init_state(params, server_optimizer, rng, plan, server=zeros,
                                        client_row=zeros)


def round_keys(state: types.ServerState, num_clients: int) -> types.Array:
  """[C] client keys: ``split(fold_in(state.rng, state.round), C)``."""
  return jax.random.split(jax.random.fold_in(state.rng, state.round), num_clients)


def server_update(optimizer, params, opt_state, pseudo_grad):
  """``optimizer.update`` on the pseudo-gradient, then ``optax.apply_updates``."""
  updates, opt_state = optimizer.update(pseudo_grad, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


class Aggregate(NamedTuple):
  """What ``server_fn`` gets after the clients ran."""

  pseudo_grad: PyTree  # the aggregator's output (FedAvg: the weighted mean delta)
  row_change_sum: PyTree  # sum over real clients of (new row - old row); None if stateless
  clients: local.ClientsResult  # per-client losses, steps, update norms [C]
  weight: types.Array  # [C] the clients' aggregation weights (0 = padding)


# client_fn(state, data_c, row_c, key_c) -> (LocalResult, new_row_c): one client from the
# server state (without the per-client store), its data dict [S, B, ...] and its own state
# row (None for stateless algorithms; then new_row_c is None too).
ClientFn = Callable[[types.ServerState, dict, PyTree, types.PRNGKey], tuple[local.LocalResult, PyTree]]
# server_fn(state, aggregate) -> (pseudo_grad, new server extras).
ServerFn = Callable[[types.ServerState, Aggregate], tuple[PyTree, PyTree]]


def federated_round(
  client_fn: ClientFn,
  server_optimizer: optax.GradientTransformation,
  plan: RoundPlan,
  server_fn: ServerFn | None = None,
  *,
  uniform: bool = False,
) -> Callable[[types.ServerState, types.ClientBatch], tuple[types.ServerState, types.RoundMetrics]]:
  """The round function: gather -> map -> scatter -> aggregate -> server update.

  ``server_fn`` defaults to "the aggregate is the pseudo-gradient, the server
  extras are unchanged" (FedAvg). ``uniform`` weighs every real client 1 in the
  aggregate instead of its ``ClientBatch.weight`` (example count).
  """
  agg = plan.aggregator
  dp = plan.client_dp
  attack = plan.attack
  poisons_updates = attack is not None and attack.poisons_updates

  def round_fn(state: types.ServerState, clients: types.ClientBatch):
    if uniform or dp is not None:  # DP-FedAvg: every client weighs 1
      clients = clients._replace(weight=(clients.weight > 0).astype(clients.weight.dtype))
    if attack is not None:  # data poisoning: the malicious clients' labels
      clients = attacks.poison_data(attack, clients)
    store = state.client_state
    rows = None if store is None else client_store.gather(store, clients.client_id)
    alg_rows = None if rows is None else rows.algorithm
    shared = state._replace(client_state=None)

    def one_client(inputs, key):
      data, row = inputs
      return client_fn(shared, data, row, key)

    res = local.map_clients(
      one_client,
      state.params,
      (local.client_data(clients), alg_rows),
      clients.weight,
      round_keys(state, clients.weight.shape[0]),
      chunk_size=plan.chunk_size,
      compressor=plan.compressor,
      residual=None if rows is None else rows.residual,
      stacked=not agg.streaming or poisons_updates,
      clip_norm=None if dp is None else state.privacy.clip_norm,
    )
    if poisons_updates:  # model poisoning: the malicious clients' updates replaced
      key = jax.random.fold_in(jax.random.fold_in(state.rng, state.round), ATTACK_STREAM)
      bad = attacks.malicious_slots(attack, clients.client_id, res.weight)
      deltas = attacks.poison_updates(attack, res.deltas, bad, res.weight, key)
      res = res._replace(deltas=deltas, update_norm=attacks.update_norms(deltas, res.weight))
    # Real clients that reported a finite result (map_clients drops failed ones: weight 0).
    kept = res.weight > 0
    change_sum = None
    if alg_rows is not None:  # a select, not a 0 weight: a failed row may hold nan
      change_sum = aggregate.weighted_sum(
        local.zero_rows(jax.tree.map(jnp.subtract, res.extra, alg_rows), kept),
        kept.astype(jnp.float32),
      )
    if store is not None:  # a failed client keeps its old row
      new_rows = types.ClientState(res.extra, res.residual)
      store = client_store.scatter(store, clients.client_id, new_rows, kept)
    privacy, privacy_metrics = state.privacy, None
    if dp is not None:  # the clipped sum, noised, over the expected number of clients
      mean, privacy, privacy_metrics = client_dp_release(dp, state, res.delta_sum,
                                                         res.update_norm, kept)
    elif agg.streaming and poisons_updates:  # the same weighted mean, from the stack
      mean = aggregate.weighted_mean(res.deltas, res.weight)
    elif agg.streaming:
      mean = agg.aggregate(res.delta_sum, res.weight_sum)
    else:
      mean = agg.aggregate(res.deltas, res.weight)
    aggregated = Aggregate(mean, change_sum, res._replace(deltas=None), res.weight)
    # Not under client-level DP: there an empty Poisson cohort still releases noise (an
    # unchanged model would tell that nobody took part, which DP must not reveal).
    params, opt_state, server, pseudo_grad = server_step(
      server_optimizer, server_fn, shared, aggregated, hold_if_empty=dp is None)
    new_state = types.ServerState(params, opt_state, state.round + 1, state.rng, server, store,
                                  privacy)
    return new_state, round_metrics(res, pseudo_grad)._replace(privacy=privacy_metrics)

  # The parts, for runtimes that split the round across machines (fedjax_med.deploy).
  round_fn.parts = RoundParts(client_fn, server_optimizer, plan, server_fn, uniform)
  return round_fn


def client_dp_release(dp: dp_fedavg.ClientDP, state: types.ServerState, clipped_sum: PyTree,
                      update_norm: types.Array, kept: types.Array):
  """DP-FedAvg's release of this round (the server's noise key of ``state.round``):
  ``(pseudo_grad, new privacy state, privacy metrics)`` from the sum of the kept clients'
  clipped deltas and their norms before clipping (``dp_fedavg.release``)."""
  dp_fedavg = _client_dp()
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.round), dp_fedavg.NOISE_STREAM)
  released = dp_fedavg.release(dp, state.privacy, clipped_sum, update_norm, kept, key)
  metrics = {"clip_norm": state.privacy.clip_norm,
             "unclipped_fraction": released.unclipped_fraction}
  return released.pseudo_grad, released.state, metrics


def server_step(server_optimizer: optax.GradientTransformation, server_fn: ServerFn | None,
                state: types.ServerState, aggregated: Aggregate, *, hold_if_empty: bool = True):
  """The server's side of a round once the clients' results are aggregated: ``server_fn``
  (default: the aggregate is the pseudo-gradient) and the server optimizer.

  With ``hold_if_empty``, a round without any real client that reported (all padding,
  dropped out or failed) changes nothing: without it a server optimizer with momentum
  would still move. Returns ``(params, opt_state, server extras, pseudo_grad)``.
  """
  if server_fn is None:
    pseudo_grad, server = aggregated.pseudo_grad, state.server
  else:
    pseudo_grad, server = server_fn(state, aggregated)
  params, opt_state = server_update(server_optimizer, state.params, state.opt_state, pseudo_grad)
  if hold_if_empty:
    any_real = aggregated.clients.weight_sum > 0
    params, opt_state, server = jax.tree.map(
      lambda new, old: jnp.where(any_real, new, old),
      (params, opt_state, server),
      (state.params, state.opt_state, state.server),
    )
  return params, opt_state, server, pseudo_grad


class RoundParts(NamedTuple):
  """What ``federated_round`` was built from: the two halves of a round.

  A runtime that runs every client on its own machine (``fedjax_med.deploy``) runs
  ``client_fn`` at the sites and the aggregation, ``server_fn`` and the server optimizer
  at the server, with the same semantics as the one-jit round.
  """

  client_fn: ClientFn
  server_optimizer: optax.GradientTransformation
  plan: RoundPlan
  server_fn: ServerFn | None
  uniform: bool


def round_parts(algorithm: types.FederatedAlgorithm) -> RoundParts:
  """The :class:`RoundParts` of an algorithm built on ``federated_round``.

  Raises:
    ValueError: ``algorithm.round`` was not made by ``federated_round`` (e.g. the
      centralized baseline, or a wrapper such as SWA).
  """
  parts = getattr(algorithm.round, "parts", None)
  if parts is None:
    raise ValueError("this algorithm's round is not a federated_round (no client/server split)")
  return parts


def stateless(
    client_fn, server_optimizer: optax.GradientTransformation, plan: RoundPlan, name: str,
    server_fn: ServerFn | None = None, *, privacy: tuple[str, ...] = ("record", "client"),
) -> types.FederatedAlgorithm:
  """A round around a stateless ``client_fn(state, data_c, key_c) -> LocalResult``.

  ``state`` is the server state at the start of the round (``state.params`` the
  model every client starts from; pass ``lr_scale(plan, state.round)`` on to
  ``local.local_train``). FedAvg, FedProx and FedSAM differ only in their
  ``client_fn``; ``server_fn`` (as ``federated_round``'s) changes what the
  server does with the aggregate. ``privacy``: the DP levels it supports.
  """
  check_plan(plan, name, stateful=False, privacy=privacy)

  def init_fn(params: types.Params, rng: types.PRNGKey) -> types.ServerState:
    return init_state(params, server_optimizer, rng, plan)

  def per_client(state, data, row, key):
    del row  # no algorithm state per client
    return client_fn(state, data, key), None

  round_fn = federated_round(per_client, server_optimizer, plan, server_fn)
  return types.FederatedAlgorithm(init_fn, round_fn)


def round_metrics(res: local.ClientsResult, pseudo_grad) -> types.RoundMetrics:
  return types.RoundMetrics(
    client_loss=res.loss,
    client_steps=res.steps,
    update_norm=res.update_norm,
    pseudo_grad_norm=aggregate.tree_norm(pseudo_grad),
    dropped=res.dropped,
  )
