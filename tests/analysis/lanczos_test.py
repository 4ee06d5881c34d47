"""Lanczos / power iteration against the dense Hessian's eigh."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fedjax_med.analysis import hvp, lanczos
from tests import testing

KEY = jax.random.PRNGKey(0)


def test_hvp_equals_dense_hessian_times_vector():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  v = optax.tree.random_like(jax.random.PRNGKey(3), params)
  flat_v = ravel_pytree(v)[0]
  want = jax.jit(hvp.dense_hessian, static_argnums=0)(loss_fn, params) @ flat_v
  got = ravel_pytree(jax.jit(hvp.hvp, static_argnums=0)(loss_fn, params, v))[0]
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_full_order_ritz_values_are_the_spectrum():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  want = testing.dense_eigvalsh(loss_fn, params)  # [26] ascending
  n = len(want)
  # An order above n is clipped to n.
  top = jax.jit(lambda p: lanczos.top_eigenvalues(loss_fn, p, KEY, order=n + 10, k=5))(params)
  np.testing.assert_allclose(top, want[::-1][:5], atol=1e-4 * np.abs(want).max())


def test_lambda_max_converges_before_full_order():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  want = testing.dense_eigvalsh(loss_fn, params)[-1]
  lam = jax.jit(lambda p: lanczos.lambda_max(loss_fn, p, KEY, order=12))(params)
  np.testing.assert_allclose(lam, want, rtol=1e-3)


def test_top_eigenpairs_are_eigenvectors():
  params, loss_fn = testing.mlp_params(), testing.mlp_loss_fn()
  values, vectors = jax.jit(lambda p: lanczos.top_eigenpairs(loss_fn, p, KEY, order=26, k=2))(params)
  hv = jax.jit(jax.vmap(lambda v: hvp.hvp(loss_fn, params, v)))(vectors)
  np.testing.assert_allclose(jax.vmap(optax.tree.norm)(vectors), [1.0, 1.0], rtol=1e-4)
  chex.assert_trees_all_close(
      hv, jax.tree.map(lambda x: values.reshape(-1, *[1] * (x.ndim - 1)) * x, vectors),
      atol=2e-4 * float(values[0]))


def test_repeated_eigenvalues_restart_after_breakdown():
  # H = diag(1, 1, 1, 2, 2, 3): the Krylov space of any start vector has dimension 3,
  # so Lanczos breaks down and must restart to find all six Ritz values.
  diag = np.array([1.0, 1.0, 1.0, 2.0, 2.0, 3.0])
  loss_fn, params = testing.quadratic(diag), {"w": jnp.ones(6)}
  result = jax.jit(lambda p: lanczos.ritz(
      lanczos.hessian_lanczos(loss_fn, p, KEY, 6)[0]))(params)[0]
  np.testing.assert_allclose(np.sort(result), diag, atol=1e-5)


def test_power_iteration_on_psd_quadratic():
  diag = np.linspace(0.1, 1.0, 10) ** 2 * np.array([1] * 9 + [4.0])  # gap 4 : 0.81
  loss_fn, params = testing.quadratic(diag), {"w": jnp.zeros(10)}
  res = jax.jit(lambda p: lanczos.power_iteration(loss_fn, p, KEY, iters=40))(params)
  np.testing.assert_allclose(res.eigenvalue, 4.0, rtol=1e-5)
  assert res.residual < 1e-3
  np.testing.assert_allclose(jnp.abs(res.eigenvector["w"][-1]), 1.0, rtol=1e-5)


def test_tol_stops_early_on_a_separated_top_eigenvalue():
  diag = np.concatenate([np.linspace(0.0, 1.0, 39), [10.0]])
  loss_fn, params = testing.quadratic(diag), {"w": jnp.zeros(40)}

  @jax.jit
  def run(p):
    result, _ = lanczos.hessian_lanczos(loss_fn, p, KEY, order=40, tol=1e-5)
    return result.num_steps, lanczos.ritz(result)[0]

  steps, values = run(params)
  assert 2 <= steps < 20
  np.testing.assert_allclose(values[-1], 10.0, rtol=1e-5)
  assert np.isnan(values[: 40 - int(steps)]).all() and not np.isnan(values[40 - int(steps):]).any()
  top = jax.jit(lambda p: lanczos.top_eigenvalues(loss_fn, p, KEY, order=40, k=2, tol=1e-5))(params)
  np.testing.assert_allclose(top[0], 10.0, rtol=1e-5)


@pytest.mark.parametrize("tol", [0.0, 1e-3])
def test_matvec_traced_once_whatever_the_order(tol):
  """fori_loop / while_loop: one trace of the HVP, and the same program size, for any order."""
  loss_fn, params = testing.mlp_loss_fn(), testing.mlp_params()
  sizes = []
  for order in (3, 17):
    calls = []
    matvec, flat, _ = hvp.flat_hvp(loss_fn, params)

    def counted(x, matvec=matvec, calls=calls):
      calls.append(1)
      return matvec(x)

    jaxpr = jax.make_jaxpr(lambda v, c=counted, o=order: lanczos.lanczos(c, v, o, KEY, tol))(flat)
    assert len(calls) == 1, order
    sizes.append(len(jaxpr.jaxpr.eqns))
  assert sizes[0] == sizes[1]
