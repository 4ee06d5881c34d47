"""Types of the round API: pytrees (NamedTuples) and aliases.

Axes: C clients, S local steps, B examples per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import optax

Array = jax.Array
PRNGKey = jax.Array
PyTree = Any
Params = PyTree
# loss_fn(params, batch, rng) -> (loss, aux). ``batch`` is a dict with
# ``image`` [B, ...], ``label`` [B] and ``mask`` [B] (bool, False = padding);
# the loss is the mean over real examples. ``aux`` is a dict; if it has the key
# ``"variables"`` (a dict of top-level collections, e.g. ``{"batch_stats": ...}``),
# those collections replace the ones in ``params`` after the step: this is how
# BatchNorm statistics travel (and are then averaged like parameters).
LossFn = Callable[[Params, dict, PRNGKey], tuple[Array, dict]]


class ClientBatch(NamedTuple):
  """The data of one round, stacked over clients.

  A round runs S steps on each of C clients; step s of client c sees
  ``image[c, s]`` etc. Padding examples have ``mask`` False; padding clients
  have ``weight`` 0 and do not count in the average.
  """

  image: Array  # [C, S, B, H, W, ch] (uint8 or float)
  label: Array  # [C, S, B] int32
  mask: Array  # [C, S, B] bool; False = padding example
  weight: Array  # [C] float32; aggregation weight (real example count), 0 = padding client
  client_id: Array  # [C] int32; -1 for padding clients


class ClientState(NamedTuple):
  """Every client's private state, one stacked row per client (leaves [N, ...]).

  A round gathers the sampled clients' rows, runs the clients, and scatters the
  new rows of real clients back (``algorithms.base.federated_round``); clients
  never sampled keep their initial row. Fields that an algorithm does not use
  are ``None``.
  """

  algorithm: PyTree = None  # the algorithm's rows: SCAFFOLD's c_i, FedDyn's g_i, FedBN's norms
  residual: PyTree = None  # error-feedback residual of each client's upload (compression)


class ServerState(NamedTuple):
  """The whole state of a federated algorithm (what a checkpoint holds)."""

  params: Params  # the server model (a full variables dict for flax models)
  opt_state: optax.OptState  # server optimizer state
  round: Array  # int32 scalar: rounds completed
  rng: PRNGKey  # uint32 [2]; the round key is fold_in(rng, round)
  server: PyTree = None  # the algorithm's server-side extras (SCAFFOLD's c, FedDyn's h), or None
  client_state: ClientState | None = None  # per-client rows [N, ...], or None (stateless)
  privacy: PyTree = None  # client-level DP's server state (the adaptive clip norm), or None


class RoundMetrics(NamedTuple):
  """Small per-round diagnostics; never stacked parameters."""

  client_loss: Array  # [C, S] training loss of each local step (0 on empty steps)
  client_steps: Array  # [C] int32 number of steps with real data
  update_norm: Array  # [C] global L2 norm of each client's delta
  pseudo_grad_norm: Array  # [] norm of the weighted-mean delta
  # client-level DP: {"clip_norm": [] the round's C, "unclipped_fraction": [] the released b}
  privacy: PyTree = None
  # [C] bool: real clients dropped because their loss, update or state row was non-finite
  # (weight 0 in the aggregate, state rows kept); None where an algorithm does not say
  dropped: Array | None = None


class FederatedAlgorithm(NamedTuple):
  """An ``(init, round)`` pair of pure functions, like optax's ``(init, update)``.

  ``init(params, rng) -> ServerState``;
  ``round(state, clients: ClientBatch) -> (ServerState, RoundMetrics)``.
  Neither is jitted: jit (and shard, donate) at the call site.
  ``client_params(state, client_id) -> Params``, where given, is client
  ``client_id``'s own model (FedBN: the global model with the client's own
  BatchNorm layers); ``None`` means every client uses ``state.params``.
  ``diagnostics(state)``, where given, returns scalars the trainer logs each
  round (SCAFFOLD: the size of its control variates).
  """

  init: Callable[[Params, PRNGKey], ServerState]
  round: Callable[[ServerState, ClientBatch], tuple[ServerState, RoundMetrics]]
  client_params: Callable[[ServerState, int], Params] | None = None
  # diagnostics(state) -> {name: scalar}: algorithm-specific numbers logged every round.
  diagnostics: Callable[[ServerState], dict] | None = None
