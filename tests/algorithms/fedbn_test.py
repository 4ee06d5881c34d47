"""FedBN vs a Python-loop reference of Li et al. (ICLR 2021).

Each client starts a round from the server model with ITS OWN BatchNorm leaves
(scale, bias, running statistics; initially the init values), trains with plain
SGD and keeps its new BatchNorm leaves. The server (sgd(1.0)) moves every leaf,
BatchNorm included, to the weighted mean of the client models (the server's BN
copy is the average of the clients', as documented in fedbn.py).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms
from fedjax_med.algorithms.fedbn import is_batchnorm_leaf
from tests import testing


class FedBNReference:
  """Server model plus each client's own BatchNorm leaves in a dict keyed by client id."""

  def __init__(self, params):
    self.server = testing.to_numpy(params)
    own = {"bn": self.server["params"]["BatchNorm_0"], "stats": self.server["batch_stats"]}
    self.own = {i: own for i in range(testing.N)}

  def round(self, clients):
    models, weights = [], []
    for row in range(testing.C):
      if clients.weight[row] == 0:  # padding client
        continue
      cid = int(clients.client_id[row])
      w = {
        "params": {"Dense_0": self.server["params"]["Dense_0"], "BatchNorm_0": self.own[cid]["bn"]},
        "batch_stats": self.own[cid]["stats"],
      }
      for s in testing.real_steps(clients, row):
        grads, aux = testing.reference_grad(testing.bn_loss)(w, testing.step_batch(clients, row, s))
        w = jax.tree.map(lambda x, g: x - testing.LR * g, w, grads)
        w = {**w, **aux["variables"]}
      self.own[cid] = {"bn": w["params"]["BatchNorm_0"], "stats": w["batch_stats"]}
      models.append(w)
      weights.append(float(clients.weight[row]))
    self.server = testing.weighted_average(models, weights)

  def local_norms(self):
    """``state.client_state.algorithm``: the BatchNorm leaves in flatten order, each stacked over clients."""
    per_client = []
    for i in range(testing.N):
      tree = {"params": {**self.server["params"], "BatchNorm_0": self.own[i]["bn"]},
              "batch_stats": self.own[i]["stats"]}
      leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
      per_client.append(tuple(leaf for path, leaf in leaves if is_batchnorm_leaf(path)))
    return tuple(np.stack(rows) for rows in zip(*per_client, strict=True))


@functools.cache
def fedbn_round(chunk=None):
  alg = algorithms.fedbn(testing.bn_loss, optax.sgd(testing.LR), optax.sgd(1.0),
                         plan=algorithms.RoundPlan(num_clients=testing.N, chunk_size=chunk))
  return alg.init, jax.jit(alg.round)


def test_batchnorm_leaves_are_the_three_bn_leaves():
  leaves = jax.tree_util.tree_flatten_with_path(testing.bn_params())[0]
  names = ["/".join(k.key for k in path) for path, _ in leaves if is_batchnorm_leaf(path)]
  assert names == ["batch_stats/BatchNorm_0/mean", "params/BatchNorm_0/bias",
                   "params/BatchNorm_0/scale"]


def test_fedbn_matches_reference_loop():
  init, round_fn = fedbn_round()
  state = init(testing.bn_params(), jax.random.PRNGKey(0))
  ref = FedBNReference(testing.bn_params())
  for r in range(testing.ROUNDS):
    clients = testing.sampled_clients(r)
    state, _ = round_fn(state, clients)
    ref.round(clients)
    # float32 reference vs the scanned/vmapped round: rtol 1e-5, atol 1e-6 (params and the
    # stored BatchNorm leaves of every client).
    chex.assert_trees_all_close(state.params, ref.server, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(state.client_state.algorithm, ref.local_norms(), rtol=1e-5, atol=1e-6)
  assert int(state.round) == testing.ROUNDS
  # Not vacuous: client 4 (every round) kept a scale that differs from the server's average.
  scale = state.client_state.algorithm[2]
  assert float(jnp.abs(scale[4] - state.params["params"]["BatchNorm_0"]["scale"]).max()) > 1e-4
  assert float(jnp.abs(state.client_state.algorithm[0][4]).max()) > 0  # its running mean moved


def test_fedbn_chunked_equals_unchunked():
  results = []
  for chunk in (None, 2):
    init, round_fn = fedbn_round(chunk)
    state = init(testing.bn_params(), jax.random.PRNGKey(0))
    for r in range(2):
      state, metrics = round_fn(state, testing.sampled_clients(r))
    results.append((state, metrics))
  # Same arithmetic in a different batching: rtol 1e-5, atol 1e-6.
  chex.assert_trees_all_close(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_fedbn_init_without_batchnorm_raises():
  alg = algorithms.fedbn(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
                         plan=algorithms.RoundPlan(num_clients=testing.N))
  with pytest.raises(ValueError, match="BatchNorm"):
    alg.init(testing.make_params(), jax.random.PRNGKey(0))
