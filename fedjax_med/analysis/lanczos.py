"""Extreme Hessian eigenvalues: Lanczos with full reorthogonalization, and power iteration.

Lanczos (Golub & Van Loan, "Matrix Computations", §10.1) builds an orthonormal
Krylov basis ``V`` of ``span{v0, H v0, ..., H^{m-1} v0}`` and the tridiagonal
``T = V^T H V``; the eigenvalues of ``T`` (Ritz values) converge first to the
extreme eigenvalues of ``H``, so ``m = 20`` HVPs give ``lambda_max`` of a
network Hessian to a few digits (Ghorbani et al., ICML 2019, use the same
method for their density). Each new vector is orthogonalized against the whole
basis, twice ("twice is enough"), so no spurious copies of converged Ritz values appear.

The loop is a ``lax.fori_loop``: the HVP is traced once, and compile time does
not grow with the order (an unrolled Python loop in google/spectral-density
``jax/lanczos.py`` takes minutes to compile at order 90).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.analysis import hvp as hvp_lib

_HI = jax.lax.Precision.HIGHEST  # no TF32 in the reorthogonalization on GPUs
# A residual below this fraction of ||H v_i|| means the Krylov space is
# invariant (exhausted): restart with a fresh vector orthogonal to the basis.
_BREAKDOWN_RTOL = 1e-5


class LanczosResult(NamedTuple):
  """The Lanczos decomposition ``H V^T ~= V^T T`` of order m."""

  alphas: jax.Array  # [m] diagonal of T
  betas: jax.Array  # [m - 1] off-diagonal of T (0 where the iteration restarted)
  basis: jax.Array  # [m, n] orthonormal rows v_0 ... v_{m-1}


def lanczos(matvec: hvp_lib.MatVec, v0: jax.Array, order: int, key: types.PRNGKey) -> LanczosResult:
  """``order`` steps of Lanczos with full reorthogonalization.

  Args:
    matvec: symmetric linear operator ``[n] -> [n]``.
    v0: ``[n]`` nonzero start vector (normalized here).
    order: number of Lanczos vectors m (clipped to n).
    key: PRNG key for restart vectors after a breakdown.

  Returns:
    The :class:`LanczosResult`.
  """
  n = v0.shape[0]
  m = min(order, n)
  dtype = v0.dtype
  basis = jnp.zeros((m + 1, n), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

  def orthogonalize(w, basis):
    for _ in range(2):
      w = w - jnp.dot(basis.T, jnp.dot(basis, w, precision=_HI), precision=_HI)
    return w

  def body(i, carry):
    basis, alphas, betas = carry
    v = basis[i]
    hv = matvec(v)
    alpha = jnp.dot(hv, v, precision=_HI)
    beta_prev = jnp.where(i > 0, betas[jnp.maximum(i - 1, 0)], 0.0)
    w = hv - alpha * v - beta_prev * basis[jnp.maximum(i - 1, 0)]
    w = orthogonalize(w, basis)  # rows > i are still zero
    beta = jnp.linalg.norm(w)
    breakdown = beta <= _BREAKDOWN_RTOL * jnp.maximum(jnp.linalg.norm(hv), 1e-30)
    fresh = orthogonalize(jax.random.normal(jax.random.fold_in(key, i), (n,), dtype), basis)
    fresh = fresh / jnp.maximum(jnp.linalg.norm(fresh), 1e-30)
    nxt = jnp.where(breakdown, fresh, w / jnp.where(breakdown, 1.0, beta))
    basis = basis.at[i + 1].set(nxt)
    return basis, alphas.at[i].set(alpha), betas.at[i].set(jnp.where(breakdown, 0.0, beta))

  init = (basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype))
  basis, alphas, betas = jax.lax.fori_loop(0, m, body, init)
  return LanczosResult(alphas=alphas, betas=betas[: m - 1], basis=basis[:m])


def tridiagonal(result: LanczosResult) -> jax.Array:
  """The ``[m, m]`` symmetric tridiagonal ``T`` of a Lanczos run."""
  return (
      jnp.diag(result.alphas) + jnp.diag(result.betas, 1) + jnp.diag(result.betas, -1)
  )


def ritz(result: LanczosResult) -> tuple[jax.Array, jax.Array]:
  """Ritz values ``[m]`` (ascending) and eigenvectors ``[m, m]`` (columns) of ``T``."""
  return jnp.linalg.eigh(tridiagonal(result))


def _run(loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int):
  matvec, flat, unravel = hvp_lib.flat_hvp(loss_fn, params)
  start_key, restart_key = jax.random.split(key)
  v0 = jax.random.normal(start_key, flat.shape, flat.dtype)
  return lanczos(matvec, v0, order, restart_key), unravel


def top_eigenvalues(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20,
    k: int = 5,
) -> jax.Array:
  """The ``k`` largest Hessian eigenvalues (Ritz values of an order-``order`` Lanczos run).

  Args:
    loss_fn: ``loss_fn(params) -> scalar``.
    params: point where the Hessian is taken.
    key: PRNG key of the random start vector.
    order: Lanczos steps (= HVPs).
    k: eigenvalues returned (at most ``min(order, n)``).

  Returns:
    ``[k]`` eigenvalue estimates, largest first. The top one converges
    fastest; the k-th needs ``order`` well above ``k``.
  """
  result, _ = _run(loss_fn, params, key, order)
  values, _ = ritz(result)
  return values[::-1][:k]


def lambda_max(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20
) -> jax.Array:
  """The largest (algebraic) Hessian eigenvalue, by Lanczos."""
  return top_eigenvalues(loss_fn, params, key, order, k=1)[0]


def top_eigenpairs(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20,
    k: int = 1,
) -> tuple[jax.Array, types.Params]:
  """The ``k`` largest eigenvalues ``[k]`` and unit Ritz vectors (params pytree, leaves ``[k, ...]``)."""
  result, unravel = _run(loss_fn, params, key, order)
  values, vectors = ritz(result)
  values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]  # [k], [m, k]
  flat = jnp.dot(vectors.T, result.basis, precision=_HI)  # [k, n]
  return values, jax.vmap(unravel)(flat)


class PowerIterationResult(NamedTuple):
  eigenvalue: jax.Array  # [] Rayleigh quotient v^T H v
  eigenvector: types.Params  # unit vector, params pytree
  residual: jax.Array  # [] ||H v - eigenvalue v||: small when converged


def power_iteration(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, iters: int = 20
) -> PowerIterationResult:
  """The eigenvalue of largest *magnitude* by power iteration (``lax.fori_loop``).

  This is ``lambda_max`` when the Hessian's positive spectrum dominates (the
  usual case near a minimum); unlike Lanczos it converges at the rate
  ``|lambda_2 / lambda_1|``, so prefer :func:`lambda_max` for a given budget.
  """
  matvec, flat, unravel = hvp_lib.flat_hvp(loss_fn, params)
  v = jax.random.normal(key, flat.shape, flat.dtype)
  v = v / jnp.linalg.norm(v)

  def body(_, v):
    hv = matvec(v)
    return hv / jnp.maximum(jnp.linalg.norm(hv), 1e-30)

  v = jax.lax.fori_loop(0, iters, body, v)
  hv = matvec(v)
  value = jnp.dot(v, hv, precision=_HI)
  return PowerIterationResult(value, unravel(v), jnp.linalg.norm(hv - value * v))
