"""Hessian trace (Hutchinson) and spectral density (stochastic Lanczos quadrature).

**Hutchinson** (1989): for Rademacher ``z`` (entries +-1), ``E[z^T H z] =
tr(H)``; the mean over independent probes is unbiased, and its standard error
is the sample standard deviation over sqrt(probes). Probes run under
``lax.map`` (``probe_batch_size`` of them vmapped together), so memory is that
of ``probe_batch_size`` HVPs however many probes are drawn.

**Stochastic Lanczos quadrature** (Ghorbani, Krishnan & Xiao, "An
Investigation into Neural Net Optimization via Hessian Eigenvalue Density",
ICML 2019; Lin, Saad & Yang 2016): an order-m Lanczos run from a random unit
vector gives nodes (Ritz values) and weights (squared first components of T's
eigenvectors) of a Gauss quadrature of the spectral measure; the density is
their average over runs, broadened by a Gaussian kernel.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.analysis import hvp as hvp_lib
from fedjax_med.analysis import lanczos as lanczos_lib


class TraceEstimate(NamedTuple):
  mean: jax.Array  # [] estimate of tr(H)
  stderr: jax.Array  # [] standard error of the mean
  samples: jax.Array  # [num_probes] z^T H z of each probe


def hutchinson(
    loss_fn: hvp_lib.ScalarLossFn,
    params: types.Params,
    key: types.PRNGKey,
    num_probes: int = 100,
    probe_batch_size: int = 1,
) -> TraceEstimate:
  """Hutchinson estimate of the Hessian trace with Rademacher probes.

  Args:
    loss_fn: ``loss_fn(params) -> scalar``.
    params: point where the Hessian is taken.
    key: PRNG key; probe i uses ``fold_in(key, i)``.
    num_probes: probes (= HVPs); the standard error falls as 1/sqrt(probes).
    probe_batch_size: probes vmapped together (memory of that many HVPs).

  Returns:
    A :class:`TraceEstimate`.
  """
  matvec, flat, _ = hvp_lib.flat_hvp(loss_fn, params)

  def probe(i):
    z = jax.random.rademacher(jax.random.fold_in(key, i), flat.shape, flat.dtype)
    return jnp.dot(z, matvec(z), precision=jax.lax.Precision.HIGHEST)

  samples = jax.lax.map(probe, jnp.arange(num_probes), batch_size=probe_batch_size)
  stderr = jnp.std(samples, ddof=1) / jnp.sqrt(num_probes) if num_probes > 1 else jnp.nan
  return TraceEstimate(jnp.mean(samples), jnp.asarray(stderr, flat.dtype), samples)


class Quadrature(NamedTuple):
  """Gauss quadrature of the spectral measure, one row per Lanczos run."""

  nodes: jax.Array  # [runs, m] Ritz values
  weights: jax.Array  # [runs, m] squared first eigenvector components; rows sum to 1


def slq(loss_fn: hvp_lib.ScalarLossFn, params: types.Params, key: types.PRNGKey, *,
        order: int = 30, num_runs: int = 3) -> Quadrature:
  """Stochastic Lanczos quadrature nodes and weights (``num_runs`` runs under ``lax.map``).

  ``n * sum(weights * nodes)`` per run is a (Gaussian-probe) trace estimate;
  with ``order >= n`` the nodes are the exact eigenvalues.
  """
  matvec, flat, _ = hvp_lib.flat_hvp(loss_fn, params)

  def run(k):
    start_key, restart_key = jax.random.split(k)
    v0 = jax.random.normal(start_key, flat.shape, flat.dtype)
    values, vectors = lanczos_lib.ritz(lanczos_lib.lanczos(matvec, v0, order, restart_key))
    return values, vectors[0] ** 2

  nodes, weights = jax.lax.map(run, jax.random.split(key, num_runs))
  return Quadrature(nodes, weights)


def density(
    quadrature: Quadrature, grid_size: int = 512, sigma: float = 0.01, margin: float = 0.05
) -> tuple[jax.Array, jax.Array]:
  """Gaussian-broadened spectral density on a regular grid.

  Args:
    quadrature: nodes and weights from :func:`slq`.
    grid_size: grid points.
    sigma: kernel width as a fraction of the spectrum's range.
    margin: grid extension beyond [min node, max node], as a fraction of the range.

  Returns:
    ``(grid [grid_size], density [grid_size])``; the density integrates to ~1.
  """
  lo, hi = jnp.min(quadrature.nodes), jnp.max(quadrature.nodes)
  span = jnp.maximum(hi - lo, 1e-6 * jnp.maximum(jnp.abs(hi), 1.0))
  width = sigma * span
  grid = jnp.linspace(lo - margin * span - 3 * width, hi + margin * span + 3 * width, grid_size)
  z = (grid[:, None, None] - quadrature.nodes[None]) / width  # [g, runs, m]
  kernel = jnp.exp(-0.5 * z**2) / (width * jnp.sqrt(2 * jnp.pi))
  dens = jnp.sum(kernel * quadrature.weights[None], axis=-1).mean(axis=-1)
  return grid, dens
