"""Server-side stochastic weight averaging (SWA) around any algorithm.

Caldarola et al., "Improving Generalization in Federated Learning by Seeking
Flat Minima", ECCV 2022 (after Izmailov et al., UAI 2018). From round
``start_round`` on, every ``period`` rounds the server model is added to a
running average; ``state.params`` is that average once it exists (the model to
evaluate), ``state.inner`` the wrapped algorithm's state that keeps training.
Pair with ``cyclical_lr`` on the server optimizer so that averaged points are
taken at the low end of each learning-rate cycle.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types


class SWAState(NamedTuple):
  inner: types.PyTree  # the wrapped algorithm's state
  swa_params: types.Params  # running average of the server params
  swa_count: types.Array  # int32 number of averaged models

  @property
  def params(self) -> types.Params:
    """The SWA average once a model was averaged, else the current server params."""
    has = self.swa_count > 0
    return jax.tree.map(lambda a, p: jnp.where(has, a, p), self.swa_params, self.inner.params)

  @property
  def round(self) -> types.Array:
    return self.inner.round


def swa(alg: types.FederatedAlgorithm, *, start_round: int, period: int = 1) -> types.FederatedAlgorithm:
  """Wraps ``alg`` with server SWA from ``start_round`` (1-based rounds completed)."""
  if period < 1:
    raise ValueError(f"swa period must be >= 1, got {period}")

  def init_fn(params, rng) -> SWAState:
    inner = alg.init(params, rng)
    return SWAState(inner, jax.tree.map(jnp.zeros_like, inner.params), jnp.zeros((), jnp.int32))

  def round_fn(state: SWAState, clients: types.ClientBatch):
    inner, metrics = alg.round(state.inner, clients)
    r = inner.round  # rounds completed, 1-based
    take = (r >= start_round) & ((r - start_round) % period == 0)
    n = state.swa_count.astype(jnp.float32)
    averaged = jax.tree.map(lambda a, p: (a * n + p) / (n + 1.0), state.swa_params, inner.params)
    swa_params = jax.tree.map(lambda new, old: jnp.where(take, new, old), averaged, state.swa_params)
    return SWAState(inner, swa_params, state.swa_count + take.astype(jnp.int32)), metrics

  client_params = None
  if alg.client_params is not None:  # the client's own parts on top of the averaged model

    def client_params(state: SWAState, client: int) -> types.Params:
      return alg.client_params(state.inner._replace(params=state.params), client)

  diagnostics = None
  if alg.diagnostics is not None:
    diagnostics = lambda state: alg.diagnostics(state.inner)  # noqa: E731

  return types.FederatedAlgorithm(init_fn, round_fn, client_params, diagnostics)


def cyclical_lr(base_lr: float, min_lr: float, *, start_round: int, period: int):
  """An optax schedule over server steps: ``base_lr`` before ``start_round``, then
  cycles of ``period`` rounds decaying linearly from ``base_lr`` to ``min_lr``.

  Server step ``t`` (0-based) produces round ``t + 1``; the last round of each
  cycle (where SWA averages) uses ``min_lr``.
  """

  def schedule(count):
    r = count + 1
    pos = jnp.mod(r - start_round, period)  # 0 at the averaging rounds
    frac = jnp.where(pos == 0, 1.0, pos / period)
    lr = base_lr + (min_lr - base_lr) * frac
    return jnp.where(r < start_round, base_lr, lr)

  return schedule
