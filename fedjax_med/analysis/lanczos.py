"""Extreme Hessian eigenvalues: Lanczos with full reorthogonalization, and power iteration.

Lanczos (Golub & Van Loan, "Matrix Computations", §10.1) builds an orthonormal
Krylov basis ``V`` of ``span{v0, H v0, ..., H^{m-1} v0}`` and the tridiagonal
``T = V^T H V``; the eigenvalues of ``T`` (Ritz values) converge first to the
extreme eigenvalues of ``H``, so ``m = 20`` HVPs give ``lambda_max`` of a
network Hessian to a few digits (Ghorbani et al., ICML 2019, use the same
method for their density). Each new vector is orthogonalized against the whole
basis, twice ("twice is enough"), so no spurious copies of converged Ritz values appear.

The loop is a ``lax.fori_loop`` (a ``lax.while_loop`` with an early-stopping
``tol``): the HVP is traced once, and compile time does not grow with the
order (an unrolled Python loop in google/spectral-density ``jax/lanczos.py``
takes minutes to compile at order 90). Each HVP costs about one gradient over
the evaluation data (~1.2 training epochs of the same examples on CPU,
``bench/analysis_speed.py``), so the order is the price.
"""

from __future__ import annotations

from collections.abc import Callable
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
  """The Lanczos decomposition ``H V^T ~= V^T T`` after ``num_steps`` of at most m steps."""

  alphas: jax.Array  # [m] diagonal of T (entries past num_steps are unused)
  betas: jax.Array  # [m - 1] off-diagonal of T (0 where the iteration restarted or stopped)
  basis: jax.Array  # [m, n] orthonormal rows v_0 ... v_{m-1} (zero rows past num_steps)
  num_steps: jax.Array  # [] int32 steps taken: m, or fewer when ``tol`` stopped early


def lanczos(
    matvec: hvp_lib.MatVec, v0: jax.Array, order: int, key: types.PRNGKey, tol: float = 0.0
) -> LanczosResult:
  """Up to ``order`` steps of Lanczos with full reorthogonalization.

  Args:
    matvec: symmetric linear operator ``[n] -> [n]``.
    v0: ``[n]`` nonzero start vector (normalized here).
    order: maximum number of Lanczos vectors m (clipped to n).
    key: PRNG key for restart vectors after a breakdown.
    tol: if > 0, stop once the largest Ritz value changes by at most
      ``tol * |value|`` in one step (it grows monotonically to lambda_max);
      each step then also solves an ``[m, m]`` tridiagonal eigenproblem, which
      is negligible next to an HVP. 0: always ``order`` steps.

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

  def body(carry):
    i, basis, alphas, betas, top, _ = carry
    v = basis[i]
    hv = matvec(v)
    alpha = jnp.dot(hv, v, precision=_HI)
    prev = jnp.maximum(i - 1, 0)
    beta_prev = jnp.where(i > 0, betas[prev], 0.0)
    w = hv - alpha * v - beta_prev * basis[prev]
    w = orthogonalize(w, basis)  # rows > i are still zero
    beta = jnp.linalg.norm(w)
    breakdown = beta <= _BREAKDOWN_RTOL * jnp.maximum(jnp.linalg.norm(hv), 1e-30)
    fresh = orthogonalize(jax.random.normal(jax.random.fold_in(key, i), (n,), dtype), basis)
    fresh = fresh / jnp.maximum(jnp.linalg.norm(fresh), 1e-30)
    nxt = jnp.where(breakdown, fresh, w / jnp.where(breakdown, 1.0, beta))
    basis = basis.at[i + 1].set(nxt)
    alphas = alphas.at[i].set(alpha)
    betas = betas.at[i].set(jnp.where(breakdown, 0.0, beta))
    done = jnp.asarray(False)
    if tol > 0:
      partial = LanczosResult(alphas, betas[: m - 1], basis[:m], i + 1)
      new_top = jnp.max(jnp.linalg.eigvalsh(tridiagonal(partial)))
      done = (i > 0) & (jnp.abs(new_top - top) <= tol * jnp.abs(new_top))
      top = new_top
    return i + 1, basis, alphas, betas, top, done

  def cond(carry):
    i, *_, done = carry
    return (i < m) & ~done

  zero = jnp.asarray(0.0, dtype)
  init = (jnp.asarray(0, jnp.int32), basis, jnp.zeros((m,), dtype), jnp.zeros((m,), dtype), zero,
          jnp.asarray(False))
  if tol > 0:
    steps, basis, alphas, betas, _, _ = jax.lax.while_loop(cond, body, init)
  else:  # a fixed trip count: fori_loop
    steps, basis, alphas, betas, _, _ = jax.lax.fori_loop(0, m, lambda _, c: body(c), init)
  betas = jnp.where(jnp.arange(m) < steps - 1, betas, 0.0)  # decouple the unused block
  return LanczosResult(alphas=alphas, betas=betas[: m - 1], basis=basis[:m], num_steps=steps)


def tridiagonal(result: LanczosResult) -> jax.Array:
  """The ``[m, m]`` symmetric tridiagonal ``T`` of a Lanczos run.

  Past ``num_steps`` the diagonal holds a value below every Ritz value of the
  used block (Gershgorin), so those fill eigenvalues sort first and the top
  ones are genuine.
  """
  m = result.alphas.shape[0]
  used = jnp.arange(m) < result.num_steps
  betas = jnp.where(jnp.arange(m - 1) < result.num_steps - 1, result.betas, 0.0)
  lo = jnp.min(jnp.where(used, result.alphas, jnp.inf))
  fill = lo - 2.0 * jnp.max(jnp.abs(betas), initial=0.0) - 1.0
  diag = jnp.where(used, result.alphas, fill)
  return jnp.diag(diag) + jnp.diag(betas, 1) + jnp.diag(betas, -1)


def ritz(result: LanczosResult) -> tuple[jax.Array, jax.Array]:
  """Ritz values ``[m]`` (ascending) and eigenvectors ``[m, m]`` (columns) of ``T``.

  After an early stop the ``m - num_steps`` smallest entries are fill: NaN values.
  """
  values, vectors = jnp.linalg.eigh(tridiagonal(result))
  m = values.shape[0]
  return jnp.where(jnp.arange(m) >= m - result.num_steps, values, jnp.nan), vectors


def hessian_lanczos(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20,
    tol: float = 0.0,
) -> tuple[LanczosResult, Callable]:
  """Lanczos on the Hessian of ``loss_fn`` at ``params`` from a random Gaussian start.

  Returns:
    ``(result, unravel)``: the :class:`LanczosResult` on raveled params and
    the function mapping ``[n]`` vectors back to params pytrees.
  """
  matvec, flat, unravel = hvp_lib.flat_hvp(loss_fn, params)
  start_key, restart_key = jax.random.split(key)
  v0 = jax.random.normal(start_key, flat.shape, flat.dtype)
  return lanczos(matvec, v0, order, restart_key, tol), unravel


def top_eigenvalues(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20,
    k: int = 5,
    tol: float = 0.0,
) -> jax.Array:
  """The ``k`` largest Hessian eigenvalues (Ritz values of an order-``order`` Lanczos run).

  Args:
    loss_fn: ``loss_fn(params) -> scalar``.
    params: point where the Hessian is taken.
    key: PRNG key of the random start vector.
    order: Lanczos steps (= HVPs).
    k: eigenvalues returned (at most ``min(order, n)``).
    tol: early stop on the top Ritz value (see :func:`lanczos`); 0 = ``order`` steps.

  Returns:
    ``[k]`` eigenvalue estimates, largest first (NaN past the steps taken).
    The top one converges fastest; the k-th needs ``order`` well above ``k``.
  """
  result, _ = hessian_lanczos(loss_fn, params, key, order, tol)
  values, _ = ritz(result)
  return values[::-1][:k]


def lambda_max(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20,
    tol: float = 0.0,
) -> jax.Array:
  """The largest (algebraic) Hessian eigenvalue, by Lanczos (``tol``: see :func:`lanczos`)."""
  return top_eigenvalues(loss_fn, params, key, order, k=1, tol=tol)[0]


def top_eigenpairs(
    loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, order: int = 20,
    k: int = 1,
) -> tuple[jax.Array, types.Params]:
  """The ``k`` largest eigenvalues ``[k]`` and unit Ritz vectors (params pytree, leaves ``[k, ...]``)."""
  result, unravel = hessian_lanczos(loss_fn, params, key, order)
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
