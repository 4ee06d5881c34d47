"""FedAvg (and FedAvgM / FedAdam via the server optimizer) vs a Python-loop reference."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms
from tests.testing import (
    LR,
    C,
    D,
    K,
    S,
    linear_loss,
    make_clients,
    make_params,
    reference_round,
    stats_loss,
)


def sgd_server(lr):
  def update(params, pseudo, state):
    return jax.tree.map(lambda p, g: p - lr * g, params, pseudo), state

  return update


def momentum_server(lr, beta):
  def update(params, pseudo, state):
    v = pseudo if state is None else jax.tree.map(lambda m, g: beta * m + g, state, pseudo)
    return jax.tree.map(lambda p, m: p - lr * m, params, v), v

  return update


def adam_server(lr, b1=0.9, b2=0.999, eps=1e-8):
  def update(params, pseudo, state):
    t, m, v = state if state is not None else (0, jax.tree.map(jnp.zeros_like, pseudo),
                                               jax.tree.map(jnp.zeros_like, pseudo))
    t += 1
    m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, pseudo)
    v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, pseudo)
    new = jax.tree.map(
        lambda p, m, v: p - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps), params, m, v
    )
    return new, (t, m, v)

  return update


SERVERS = {
    "fedavg": (optax.sgd(1.0), sgd_server(1.0)),
    "fedavg_lr": (optax.sgd(0.5), sgd_server(0.5)),
    "fedavgm": (optax.sgd(1.0, momentum=0.9), momentum_server(1.0, 0.9)),
    "fedadam": (optax.adam(0.05), adam_server(0.05)),
}


# Every server optimizer unchunked and one chunked in the everyday loop; the other chunked
# combinations (chunking does not touch the server step) are slow.
@pytest.mark.parametrize("server,chunk", [
    pytest.param(server, chunk, marks=() if chunk is None or (server, chunk) == ("fedadam", 3)
                 else pytest.mark.slow)
    for chunk in (None, 1, 3) for server in sorted(SERVERS)
])
def test_fedavg_matches_reference_loop(server, chunk):
  server_tx, ref_server = SERVERS[server]
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), server_tx, plan=algorithms.RoundPlan(chunk_size=chunk))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  ref_params, ref_state = make_params(), None
  for r in range(3):
    clients = make_clients(seed=r)
    state, metrics = round_fn(state, clients)
    ref_params, ref_state = reference_round(
        linear_loss, ref_params, clients, lambda p, g, st=ref_state: ref_server(p, g, st)
    )
    chex.assert_trees_all_close(state.params, ref_params, rtol=1e-5, atol=1e-6)
  assert int(state.round) == 3
  np.testing.assert_array_equal(metrics.client_steps, [3, 2, 3, 0])
  assert metrics.client_loss.shape == (C, S)
  assert float(metrics.client_loss[1, 2]) == 0.0 and float(metrics.update_norm[3]) == 0.0


def test_variables_from_aux_are_averaged_like_params():
  alg = algorithms.fedavg(stats_loss, optax.sgd(LR), optax.sgd(1.0))
  state = alg.init(make_params(with_stats=True), jax.random.PRNGKey(0))
  clients = make_clients()
  state, _ = jax.jit(alg.round)(state, clients)
  ref = reference_round(stats_loss, make_params(with_stats=True), clients,
                        lambda p, g: sgd_server(1.0)(p, g, None))[0]
  chex.assert_trees_all_close(state.params, ref, rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(state.params["stats"]["mean"]).sum()) > 0


@functools.cache
def ragged_round(chunk):
  """``(params, metrics)`` of one round over 7 clients in chunks of ``chunk``."""
  clients = make_clients(num_clients=7, seed=3)
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR, momentum=0.5), optax.sgd(1.0),
                          plan=algorithms.RoundPlan(chunk_size=chunk))
  state, metrics = jax.jit(alg.round)(alg.init(make_params(), jax.random.PRNGKey(0)), clients)
  return state.params, metrics


# Ragged last chunks (2, 3) and a chunk larger than C (16) in the everyday loop; chunk sizes
# that divide C (1, 7) are slow.
@pytest.mark.parametrize("chunk", [2, 3, 16, pytest.param(1, marks=pytest.mark.slow),
                                   pytest.param(7, marks=pytest.mark.slow)])
def test_chunked_equals_unchunked_with_ragged_chunks(chunk):
  chex.assert_trees_all_close(ragged_round(None), ragged_round(chunk), rtol=1e-5, atol=1e-6)


def test_round_compiles_once_over_three_rounds():
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.adam(0.01))
  # Built from float64-free python floats: init must cast so round 2 does not retrace.
  params = {"w": np.full((D, K), 0.1), "b": np.zeros((K,))}
  state = alg.init(params, jax.random.PRNGKey(0))
  round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  for r in range(3):
    state, _ = round_fn(state, make_clients(seed=r))
  assert int(state.round) == 3


def test_init_accepts_typed_keys_and_keeps_float32():
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  state = alg.init(make_params(), jax.random.key(3))
  assert state.rng.dtype == jnp.uint32 and state.rng.shape == (2,)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))


def test_all_padding_round_leaves_params_unchanged():
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  c = make_clients()
  empty = c._replace(mask=np.zeros_like(c.mask), weight=np.zeros_like(c.weight))
  new_state, metrics = jax.jit(alg.round)(state, empty)
  chex.assert_trees_all_close(new_state.params, state.params)
  assert np.all(np.isfinite(metrics.client_loss))
