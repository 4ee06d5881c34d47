"""FedDyn vs a Python-loop reference of Acar et al. (ICLR 2021), Algorithm 1.

Client i (from the server model w_s, with its state g_i), plain SGD on
``L_i(w) - <g_i, w> + alpha/2 ||w - w_s||^2``, i.e. with the gradient
``grad L_i(w) - g_i + alpha (w - w_s)``; then ``g_i <- g_i - alpha (w_i - w_s)``.
Server: ``h <- h - (alpha/N) sum_{i in S} (w_i - w_s)``,
``w_s <- weighted_mean(w_i) - h / alpha`` (weights = ClientBatch.weight).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_med import algorithms
from tests.testing import (
  LR,
  ROUNDS,
  C,
  N,
  linear_loss,
  make_params,
  real_steps,
  reference_grad,
  sampled_clients,
  stack_rows,
  step_batch,
  to_numpy,
  weighted_average,
)

ALPHA = 0.1


def grad(w, batch):
  return reference_grad(linear_loss)(w, batch)[0]


class FedDynReference:
  """The paper's server and clients, with ``g_i`` in a dict keyed by client id."""

  def __init__(self, params):
    params = to_numpy(params)
    zeros = jax.tree.map(np.zeros_like, params)
    self.w, self.h = params, zeros
    self.g = {i: zeros for i in range(N)}

  def round(self, clients):
    w_s = self.w
    models, weights, moves = [], [], []
    for row in range(C):
      if clients.weight[row] == 0:  # padding client
        continue
      cid = int(clients.client_id[row])
      g_i = self.g[cid]
      w = w_s
      for s in real_steps(clients, row):
        gl = grad(w, step_batch(clients, row, s))
        d = jax.tree.map(lambda a, gi, x, xs: a - gi + ALPHA * (x - xs), gl, g_i, w, w_s)
        w = jax.tree.map(lambda x, dd: x - LR * dd, w, d)
      move = jax.tree.map(np.subtract, w, w_s)
      self.g[cid] = jax.tree.map(lambda gi, m: gi - ALPHA * m, g_i, move)
      moves.append(move)
      models.append(w)
      weights.append(float(clients.weight[row]))
    self.h = jax.tree.map(lambda hh, *m: hh - ALPHA / N * sum(m), self.h, *moves)
    self.w = jax.tree.map(lambda m, hh: m - hh / ALPHA, weighted_average(models, weights), self.h)


def make_feddyn():
  return algorithms.feddyn(linear_loss, optax.sgd(LR), optax.sgd(1.0), alpha=ALPHA,
                           plan=algorithms.RoundPlan(num_clients=N))


def test_feddyn_matches_reference_loop():
  alg = make_feddyn()
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  ref = FedDynReference(make_params())
  for r in range(ROUNDS):
    clients = sampled_clients(r)
    state, _ = round_fn(state, clients)
    ref.round(clients)
    # float32 reference vs the scanned/vmapped round: rtol 1e-5, atol 1e-6 (w, h and every g_i;
    # h / alpha amplifies h's rounding 10x, still well inside atol).
    chex.assert_trees_all_close(state.params, ref.w, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.server, ref.h, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.client_state.algorithm, stack_rows(ref.g), rtol=1e-5, atol=1e-6)
  assert int(state.round) == ROUNDS
  assert float(jnp.abs(state.server["w"]).sum()) > 0


def test_feddyn_round_compiles_once_over_three_rounds():
  alg = make_feddyn()
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  for r in range(ROUNDS):
    state, _ = round_fn(state, sampled_clients(r))
  assert int(state.round) == ROUNDS
