"""Filter normalization, slices through the origin, interpolation and paths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_med.analysis import landscape
from tests import testing

KEY = jax.random.PRNGKey(0)


def _conv_dense_params():
  rng = np.random.default_rng(0)
  return {
      "conv": {"kernel": jnp.asarray(rng.normal(size=(3, 3, 2, 5)), jnp.float32),
               "bias": jnp.asarray(rng.normal(size=(5,)), jnp.float32)},
      "dense": {"kernel": jnp.asarray(rng.normal(size=(7, 4)), jnp.float32),
                "bias": jnp.asarray(rng.normal(size=(4,)), jnp.float32)},
      "norm": {"scale": jnp.ones((5,), jnp.float32)},
  }


def test_filter_norms_equal_the_weights_and_vectors_are_ignored():
  params = _conv_dense_params()
  d = landscape.filter_normalized_direction(KEY, params)
  conv_d, conv_w = np.asarray(d["conv"]["kernel"]), np.asarray(params["conv"]["kernel"])
  for j in range(5):  # a conv filter: all of [kh, kw, cin] for output channel j
    np.testing.assert_allclose(np.linalg.norm(conv_d[..., j]), np.linalg.norm(conv_w[..., j]),
                               rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(d["dense"]["kernel"], axis=0),
                             np.linalg.norm(params["dense"]["kernel"], axis=0), rtol=1e-5)
  for leaf in (d["conv"]["bias"], d["dense"]["bias"], d["norm"]["scale"]):
    np.testing.assert_array_equal(leaf, 0.0)
  # The direction is random, not a rescaled copy of the weights.
  assert abs(np.corrcoef(conv_d.ravel(), conv_w.ravel())[0, 1]) < 0.5


def test_filter_normalize_1d_leaves_when_not_ignored():
  params = _conv_dense_params()
  d = landscape.filter_normalized_direction(KEY, params, ignore_1d=False)
  np.testing.assert_allclose(np.linalg.norm(d["dense"]["bias"]),
                             np.linalg.norm(params["dense"]["bias"]), rtol=1e-5)


def test_slices_at_the_origin_equal_the_model_loss():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  d1 = landscape.filter_normalized_direction(jax.random.PRNGKey(1), params)
  d2 = landscape.filter_normalized_direction(jax.random.PRNGKey(2), params)
  alphas = jnp.array([-1.0, -0.5, 0.0, 0.5, 1.0])

  @jax.jit
  def run(params):
    return (landscape.loss_line(loss_fn, params, d1, alphas, points_per_batch=2),
            landscape.loss_surface(loss_fn, params, d1, d2, alphas, alphas[1:4], points_per_batch=4))

  line, surface = run(params)
  loss = loss_fn(params)
  np.testing.assert_allclose(line[2], loss, rtol=1e-6)
  assert surface.shape == (5, 3)
  np.testing.assert_allclose(surface[2, 1], loss, rtol=1e-6)
  np.testing.assert_allclose(surface[:, 1], line, rtol=1e-5)  # beta = 0 column is the d1 line
  moved = jax.tree.map(lambda p, a, b: p + 0.5 * a - 0.5 * b, params, d1, d2)
  np.testing.assert_allclose(surface[3, 0], loss_fn(moved), rtol=1e-5)


def test_interpolation_endpoints_and_path_through_checkpoints():
  loss_fn = testing.mlp_loss_fn()
  a, b, c = testing.mlp_params(0), testing.mlp_params(1), testing.mlp_params(2)
  ts = jnp.array([-0.5, 0.0, 0.25, 1.0, 1.5])
  losses = jax.jit(lambda x, y: landscape.interpolation_losses(loss_fn, x, y, ts))(a, b)
  np.testing.assert_allclose(losses[1], loss_fn(a), rtol=1e-6)
  np.testing.assert_allclose(losses[3], loss_fn(b), rtol=1e-6)
  mix = jax.tree.map(lambda x, y: 0.75 * x + 0.25 * y, a, b)
  np.testing.assert_allclose(losses[2], loss_fn(mix), rtol=1e-5)

  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), a, b, c)
  positions, path = jax.jit(lambda s: landscape.path_losses(loss_fn, s, points_per_segment=4))(
      stacked)
  assert positions.shape == path.shape == (9,)
  np.testing.assert_allclose(np.asarray(path)[[0, 4, 8]], [loss_fn(a), loss_fn(b), loss_fn(c)], rtol=1e-5)
  np.testing.assert_allclose(path[1:4], losses_between(loss_fn, a, b, [0.25, 0.5, 0.75]), rtol=1e-5)
  with pytest.raises(ValueError, match="2 checkpoints"):
    landscape.path_losses(loss_fn, jax.tree.map(lambda x: x[:1], stacked))


def losses_between(loss_fn, a, b, ts):
  return [loss_fn(landscape.interpolate(a, b, t)) for t in ts]


def test_project_onto_plane_recovers_coefficients():
  origin = testing.mlp_params(0)
  d1 = landscape.filter_normalized_direction(jax.random.PRNGKey(1), origin)
  d2 = landscape.filter_normalized_direction(jax.random.PRNGKey(2), origin)
  point = jax.tree.map(lambda o, x, y: o + 0.3 * x - 1.2 * y, origin, d1, d2)
  np.testing.assert_allclose(landscape.project_onto_plane(point, origin, d1, d2), [0.3, -1.2],
                             atol=1e-4)
