"""epsilon- and m-sharpness against closed forms on quadratics and a linear model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_med.analysis import sharpness
from tests import testing


def test_eps_sharpness_box_of_a_convex_quadratic_is_the_best_vertex():
  # f(w + z) - f(w) = sum_i a_i/2 z_i^2 + (a_i w_i + b_i) z_i is maximized over the box
  # |z_i| <= eps (|w_i| + 1) at z_i = bound_i * sign(a_i w_i + b_i).
  a = np.array([1.0, 2.0, 0.5, 3.0])
  b = np.array([0.3, -0.2, 0.0, 0.1])
  w = np.array([0.5, -1.0, 2.0, 0.0])
  eps = 0.01
  loss_fn = testing.quadratic(a, b)
  bound = eps * (np.abs(w) + 1)
  gain = np.sum(a / 2 * bound**2 + np.abs(a * w + b) * bound)
  base = 0.5 * np.sum(a * w**2) + b @ w
  got = jax.jit(lambda p: sharpness.eps_sharpness(loss_fn, p, eps, steps=10))({"w": jnp.asarray(w)})
  np.testing.assert_allclose(got.absolute, gain, rtol=1e-4)
  np.testing.assert_allclose(got.base_loss, base, rtol=1e-6)
  np.testing.assert_allclose(got.relative, 100 * gain / (1 + base), rtol=1e-4)


def test_eps_sharpness_l2_of_a_linear_loss():
  # max over ||z / (|w| + 1)|| <= eps of g . z is eps * ||g * (|w| + 1)||.
  g = np.array([1.0, -2.0, 0.5])
  w = np.array([0.0, 1.0, -3.0])
  eps = 0.05
  got = jax.jit(lambda p: sharpness.eps_sharpness(
      lambda q: jnp.dot(jnp.asarray(g, jnp.float32), q["w"]), p, eps, norm="l2", steps=4))(
          {"w": jnp.asarray(w, jnp.float32)})
  np.testing.assert_allclose(got.absolute, eps * np.linalg.norm(g * (np.abs(w) + 1)), rtol=1e-5)


def test_m_sharpness_one_step_is_sam_per_batch():
  params = testing.mlp_params()
  x, y = testing.mlp_data(n=12)
  m, rho = 4, 0.1
  batches = (x.reshape(3, m, -1), y.reshape(3, m))
  got = jax.jit(lambda p: sharpness.m_sharpness(testing.mlp_batch_loss, p, batches, rho))(params)
  # Reference: SAM's perturbation rho * g / ||g|| on each batch, written out directly.
  def sam(batch):
    g = jax.grad(testing.mlp_batch_loss)(params, batch)
    gnorm = jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g)))
    moved = jax.tree.map(lambda p, d: p + rho * d / gnorm, params, g)
    return testing.mlp_batch_loss(params, batch), testing.mlp_batch_loss(moved, batch)

  base, worst = jax.jit(jax.vmap(sam))(batches)
  np.testing.assert_allclose(got.base_loss, np.mean(base), rtol=1e-5)
  np.testing.assert_allclose(got.absolute, np.mean(worst) - np.mean(base), rtol=1e-4)
  assert got.absolute > 0


def test_worst_case_never_below_the_centre_and_stays_in_the_box():
  loss_fn, params = testing.mlp_loss_fn(), testing.mlp_params()
  eps = 0.02
  run = jax.jit(lambda p, k: sharpness.worst_case_perturbation(loss_fn, p, eps, steps=5, key=k))
  worst, _ = jax.jit(lambda p: sharpness.worst_case_perturbation(loss_fn, p, eps, steps=5))(params)
  assert worst > loss_fn(params)  # the zero start is among the iterates; ascent goes up
  worst, delta = run(params, jax.random.PRNGKey(1))  # random start
  for d in jax.tree.leaves(delta):
    assert np.all(np.abs(d) <= eps + 1e-7)
  np.testing.assert_allclose(worst, loss_fn(jax.tree.map(jnp.add, params, delta)), rtol=1e-6)


def test_bad_norm():
  with pytest.raises(ValueError, match="norm"):
    sharpness.worst_case_perturbation(testing.mlp_loss_fn(), testing.mlp_params(), 0.1, norm="l1")
