"""Tiny smooth objectives with dense references for the analysis tests."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree


def mlp_params(seed: int = 0, sizes=(3, 4, 2)) -> dict:
  """A 3-4-2 tanh MLP: 26 parameters (two kernels, two biases)."""
  rng = np.random.default_rng(seed)
  params = {}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    params[f"dense{i}"] = {
        "kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32),
        "bias": jnp.asarray(0.1 * rng.normal(size=(b,)), jnp.float32),
    }
  return params


def mlp_data(seed: int = 1, n: int = 16, dim: int = 3, classes: int = 2):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, dim)), jnp.float32),
          jnp.asarray(rng.integers(0, classes, size=(n,)), jnp.int32))


def mlp_apply(params, x):
  h = jnp.tanh(x @ params["dense0"]["kernel"] + params["dense0"]["bias"])
  return h @ params["dense1"]["kernel"] + params["dense1"]["bias"]


def mlp_batch_loss(params, batch):
  x, y = batch
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp_apply(params, x), y))


def mlp_loss_fn(data=None):
  """``loss_fn(params) -> mean CE`` of the MLP on fixed data."""
  data = mlp_data() if data is None else data
  return lambda params: mlp_batch_loss(params, data)


def dense_eigvalsh(loss_fn, params) -> np.ndarray:
  """Ascending eigenvalues of the dense Hessian of the raveled params (float64 on the host)."""
  flat, unravel = ravel_pytree(params)
  hess = jax.jit(jax.hessian(lambda v: loss_fn(unravel(v))))(flat)
  hess = np.asarray(hess, np.float64)
  return np.linalg.eigvalsh((hess + hess.T) / 2)


def quadratic(diag, b=None):
  """``f(w) = 1/2 sum a_i w_i^2 + b . w`` on a ``{"w": [n]}`` pytree, Hessian ``diag(a)``."""
  a = jnp.asarray(diag, jnp.float32)
  b = jnp.zeros_like(a) if b is None else jnp.asarray(b, jnp.float32)
  return lambda p: 0.5 * jnp.sum(a * p["w"] ** 2) + jnp.dot(b, p["w"])
