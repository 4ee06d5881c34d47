"""Drift, cosine and dispersion helpers against numpy."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med.analysis import drift
from tests import testing


def _stacked(c=4, seed=0):
  rng = np.random.default_rng(seed)
  tree = {"a": rng.normal(size=(c, 3, 2)), "b": {"c": rng.normal(size=(c, 5))}}
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def _flat(tree):
  return np.concatenate([np.asarray(tree["a"]).reshape(len(tree["a"]), -1),
                         np.asarray(tree["b"]["c"])], axis=1).astype(np.float64)


def _flat_any(stacked):
  leaves = jax.tree.leaves(stacked)
  return np.concatenate([np.asarray(v).reshape(len(v), -1) for v in leaves], axis=1)


def test_client_drift_and_updates():
  clients = _stacked()
  server = jax.tree.map(lambda x: x[0] * 0.5, clients)
  x, s = _flat(clients), _flat(jax.tree.map(lambda v: v[None], server))[0]
  np.testing.assert_allclose(drift.client_drift(clients, server), np.linalg.norm(x - s, axis=1),
                             rtol=1e-5)
  np.testing.assert_allclose(_flat(drift.client_updates(clients, server)), s - x, rtol=1e-5)


def test_cosine_matrix_and_alignment_with_weights():
  stacked = _stacked()
  x = _flat(stacked)
  w = np.array([1.0, 2.0, 0.0, 1.0])  # client 2 is padding
  p = w / w.sum()
  unit = x / np.linalg.norm(x, axis=1, keepdims=True)
  cos = unit @ unit.T
  np.testing.assert_allclose(drift.cosine_matrix(stacked), cos, rtol=1e-5, atol=1e-6)
  got = jax.jit(drift.alignment)(stacked, jnp.asarray(w))
  mean = p @ x
  pair = np.outer(p, p) * (1 - np.eye(4))
  np.testing.assert_allclose(got.mean_pairwise_cosine, (pair * cos).sum() / pair.sum(), rtol=1e-5)
  np.testing.assert_allclose(got.cosine_to_mean,
                             x @ mean / (np.linalg.norm(x, axis=1) * np.linalg.norm(mean)), rtol=1e-5)
  dispersion = p @ np.sum((x - mean) ** 2, axis=1)
  np.testing.assert_allclose(got.dispersion, dispersion, rtol=1e-5)
  np.testing.assert_allclose(got.relative_dispersion, dispersion / (mean @ mean), rtol=1e-5)
  np.testing.assert_allclose(got.dissimilarity, 1 + dispersion / (mean @ mean), rtol=1e-5)
  np.testing.assert_allclose(got.mean_norm, np.linalg.norm(mean), rtol=1e-5)


def test_identical_clients_agree_perfectly():
  one = _stacked(c=1)
  same = jax.tree.map(lambda x: jnp.repeat(x, 3, axis=0), one)
  got = jax.jit(drift.alignment)(same)
  np.testing.assert_allclose(got.mean_pairwise_cosine, 1.0, rtol=1e-5)
  np.testing.assert_allclose(got.dissimilarity, 1.0, rtol=1e-5)
  np.testing.assert_allclose(got.dispersion, 0.0, atol=1e-5)


def test_gradient_alignment_uses_each_clients_gradient():
  params = testing.mlp_params()
  x, y = testing.mlp_data(n=12)
  data = (x.reshape(3, 4, 3), y.reshape(3, 4))
  grads, got = jax.jit(lambda p: (drift.client_gradients(testing.mlp_batch_loss, p, data),
                                   drift.gradient_alignment(testing.mlp_batch_loss, p, data)))(params)
  want = jax.jit(jax.vmap(jax.grad(testing.mlp_batch_loss), in_axes=(None, 0)))(params, data)
  for g, wv in zip(jax.tree.leaves(grads), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, wv, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got.norms, np.linalg.norm(_flat_any(want), axis=1), rtol=1e-5)


def test_solution_distance_and_generalization_gap():
  a, b = testing.mlp_params(0), testing.mlp_params(1)
  fa = np.concatenate([np.ravel(v) for v in jax.tree.leaves(a)])
  fb = np.concatenate([np.ravel(v) for v in jax.tree.leaves(b)])
  got = drift.solution_distance(a, b)
  np.testing.assert_allclose(got["distance"], np.linalg.norm(fa - fb), rtol=1e-5)
  np.testing.assert_allclose(got["relative"], np.linalg.norm(fa - fb) / np.linalg.norm(fa), rtol=1e-5)
  np.testing.assert_allclose(got["cosine"], fa @ fb / np.linalg.norm(fa) / np.linalg.norm(fb),
                             rtol=1e-5)
  gap = drift.generalization_gap({"loss": 0.2, "accuracy": 0.9, "round": 3},
                                 {"loss": 0.5, "accuracy": 0.8, "auc": 0.7})
  assert gap.keys() == {"loss", "accuracy"}
  np.testing.assert_allclose([gap["loss"], gap["accuracy"]], [0.3, 0.1])
