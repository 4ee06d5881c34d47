"""Hessian-vector products of ``loss_fn(params) -> scalar`` on pytrees.

Forward-over-reverse (``jax.jvp`` of ``jax.grad``) is the cheapest exact HVP:
one forward and one backward pass with tangents, about 2-3x a gradient, and
memory of one gradient (jax-ml/jax ``docs/notebooks/autodiff_cookbook.md``).
The Hessian is never formed; :func:`dense_hessian` exists for tests on tiny models.

The iterative tools (Lanczos, Hutchinson, stochastic Lanczos quadrature) work
on flat float32 vectors (``jax.flatten_util.ravel_pytree``): a Krylov basis is
then one ``[m, n]`` matrix, and reorthogonalization is two matmuls.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jax.flatten_util import ravel_pytree

from fedjax_med import types

# loss_fn(params) -> scalar, closed over a fixed evaluation batch by the caller.
ScalarLossFn = Callable[[types.Params], jax.Array]
# A symmetric linear operator on flat vectors: [n] -> [n].
MatVec = Callable[[jax.Array], jax.Array]


def hvp(loss_fn: ScalarLossFn, params: types.Params, v: types.Params) -> types.Params:
  """The Hessian of ``loss_fn`` at ``params`` times the tangent ``v`` (same pytree as params)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (v,))[1]


def make_hvp(loss_fn: ScalarLossFn, params: types.Params) -> Callable[[types.Params], types.Params]:
  """``v -> H v`` at fixed ``params`` (pytree in, pytree out)."""
  return lambda v: hvp(loss_fn, params, v)


def flat_hvp(loss_fn: ScalarLossFn, params: types.Params) -> tuple[MatVec, jax.Array, Callable]:
  """The HVP as a matvec on flat vectors.

  Args:
    loss_fn: scalar loss of the params pytree.
    params: the point where the Hessian is taken.

  Returns:
    ``(matvec, flat_params, unravel)``: ``matvec`` maps ``[n] -> [n]`` float32,
    ``flat_params`` is ``[n]`` and ``unravel`` maps ``[n]`` back to a pytree.
  """
  flat, unravel = ravel_pytree(params)

  def matvec(x: jax.Array) -> jax.Array:
    hv = hvp(loss_fn, params, unravel(x.astype(flat.dtype)))
    return ravel_pytree(hv)[0]

  return matvec, flat, unravel


def dense_hessian(loss_fn: ScalarLossFn, params: types.Params) -> jax.Array:
  """The full ``[n, n]`` Hessian of the raveled params (reference for tiny models only)."""
  flat, unravel = ravel_pytree(params)
  return jax.hessian(lambda x: loss_fn(unravel(x)))(flat)
