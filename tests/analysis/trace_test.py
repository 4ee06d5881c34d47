"""Hutchinson trace and stochastic Lanczos quadrature against the dense Hessian."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med.analysis import trace
from tests import testing

KEY = jax.random.PRNGKey(0)


def test_hutchinson_within_three_standard_errors_of_the_dense_trace():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  want = testing.dense_eigvalsh(loss_fn, params).sum()
  est = jax.jit(lambda p: trace.hutchinson(loss_fn, p, KEY, num_probes=300, probe_batch_size=30))(
      params)
  assert est.samples.shape == (300,)
  np.testing.assert_allclose(est.stderr, np.std(est.samples, ddof=1) / np.sqrt(300), rtol=1e-5)
  assert 0 < est.stderr < abs(want)
  assert abs(est.mean - want) < 3 * est.stderr, (float(est.mean), want, float(est.stderr))


def test_hutchinson_is_exact_for_a_diagonal_hessian():
  # z^T diag(a) z = sum(a) for every Rademacher z: zero variance.
  diag = np.array([0.5, 2.0, -1.0, 3.0])
  est = jax.jit(lambda p: trace.hutchinson(testing.quadratic(diag), p, KEY, num_probes=8))(
      {"w": jnp.ones(4)})
  np.testing.assert_allclose(est.samples, diag.sum(), rtol=1e-6)
  np.testing.assert_allclose(est.stderr, 0.0, atol=1e-6)


def test_slq_at_full_order_recovers_the_spectrum_and_a_normalized_density():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  eig = testing.dense_eigvalsh(loss_fn, params)
  n = len(eig)
  quad = jax.jit(lambda p: trace.slq(loss_fn, p, KEY, order=n, num_runs=2))(params)
  assert quad.nodes.shape == (2, n)
  for run in range(2):
    np.testing.assert_allclose(np.sort(quad.nodes[run]), eig, atol=1e-4 * np.abs(eig).max())
  np.testing.assert_allclose(quad.weights.sum(axis=1), 1.0, rtol=1e-5)
  grid, dens = trace.density(quad, grid_size=2000, sigma=0.01)
  assert grid[0] < eig[0] and grid[-1] > eig[-1]
  np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, rtol=1e-2)
