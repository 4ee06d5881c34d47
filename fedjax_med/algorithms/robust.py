"""Byzantine-robust aggregators over the stacked client deltas (issue 16, part 3).

Every function here is pure and jit-able, takes the stacked deltas (a pytree of
``[C, ...]`` leaves) and the ``[C]`` client weights, and returns one delta
shaped like a single client's. A client counts only if it is *real*: weight
> 0 (0 = padding client) and every entry of its delta finite (a client whose
update overflowed or went NaN is treated as weight 0, never averaged). ``n``
below is the number of real clients of the round, a traced value (padding and
failures vary per round, the compiled round does not). When no client is real
the result is 0 (no change).

Weighting (robust rules must not let a client buy influence by claiming many
examples, so the order-statistic and distance rules count every real client
once, as in their papers):

- ``median``: coordinate-wise median (Yin et al. 2018; Flower's FedMedian),
  unweighted; an even ``n`` averages the two middle values (as ``np.median``).
- ``trimmed_mean``: coordinate-wise beta-trimmed mean (Yin et al. 2018),
  unweighted: drops ``floor(beta n)`` largest and smallest values per coordinate.
- ``krum`` / ``multikrum``: Blanchard et al. 2017, unweighted; multi-Krum
  averages the selected deltas unweighted.
- ``geometric_median``: RFA (Pillutla et al. 2022), smoothed Weiszfeld with the
  client weights as the paper's ``alpha_i``.
- ``norm_bound``: every delta clipped to L2 norm ``tau`` (Sun et al. 2019,
  "Can you really backdoor federated learning?"), then the client-weighted mean.

Centered clipping (Karimireddy et al. 2021) clips around the *previous*
aggregate, i.e. needs server state carried from round to round; the
``Aggregator`` seam is stateless (``aggregate(deltas, weights)``), so norm
bounding (clipping around 0, stateless) is what is implemented here.

Memory: all of them need every client's delta at once (``C x params``);
pairwise distances (Krum) are computed one row at a time (``lax.map``), never as
a ``[C, C, params]`` difference, and without a Gram matrix (whose cancellation
loses precision, and which TF32 matmuls on GPUs would round further).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.algorithms import aggregate


def real_clients(deltas: types.PyTree, weights: types.Array) -> types.Array:
  """[C] bool: weight > 0 and every entry of the client's delta finite."""
  ok = weights > 0
  for leaf in jax.tree.leaves(deltas):
    ok = ok & jnp.all(jnp.isfinite(leaf.reshape(leaf.shape[0], -1)), axis=1)
  return ok


def _expand(mask: types.Array, leaf: types.Array) -> types.Array:
  return mask.reshape(mask.shape + (1,) * (leaf.ndim - 1))


def _zero_out(deltas: types.PyTree, real: types.Array) -> types.PyTree:
  """Excluded clients' deltas set to 0 (``where``, not a product: 0 * NaN is NaN)."""
  return jax.tree.map(lambda x: jnp.where(_expand(real, x), x, jnp.zeros_like(x)), deltas)


def _sorted_band_mean(deltas: types.PyTree, real: types.Array, drop: types.Array) -> types.PyTree:
  """Per coordinate, the mean of the real clients' values of rank in [drop, n - drop)."""
  n = jnp.sum(real.astype(jnp.int32))
  ranks = jnp.arange(real.shape[0])
  keep = (ranks >= drop) & (ranks < n - drop)  # [C]
  count = jnp.maximum(n - 2 * drop, 1).astype(jnp.float32)

  def one(leaf):
    x = leaf.reshape(leaf.shape[0], -1)  # [C, -1]: XLA:CPU sorts and reduces it far faster
    # Excluded clients sort last (+inf), so the real values hold ranks [0, n).
    srt = jnp.sort(jnp.where(real[:, None], x, jnp.inf), axis=0)
    band = jnp.where(keep[:, None], srt, jnp.zeros_like(srt))
    out = jnp.where(n > 0, jnp.sum(band, axis=0) / count.astype(x.dtype), jnp.zeros_like(x[0]))
    return out.reshape(leaf.shape[1:])

  return jax.tree.map(one, deltas)


def coordinate_median(deltas: types.PyTree, weights: types.Array) -> types.PyTree:
  """Coordinate-wise median of the real clients' deltas (unweighted).

  Args:
    deltas: stacked client deltas, leaves ``[C, ...]``.
    weights: [C] client weights (0 = padding; only ``> 0`` matters).

  Returns:
    The median delta (0 where no client is real).
  """
  real = real_clients(deltas, weights)
  n = jnp.sum(real.astype(jnp.int32))
  # The median is the band of ranks [(n-1)//2, n - (n-1)//2): one value for odd n, two for even.
  return _sorted_band_mean(deltas, real, (n - 1) // 2)


def trimmed_mean(deltas: types.PyTree, weights: types.Array, trim_fraction: float) -> types.PyTree:
  """Coordinate-wise trimmed mean (unweighted): ``floor(beta n)`` values dropped at each end.

  With ``0 <= beta < 0.5`` at least one value remains for every ``n >= 1``;
  ``beta = 0`` is the unweighted mean of the real clients.
  """
  real = real_clients(deltas, weights)
  n = jnp.sum(real.astype(jnp.int32))
  drop = jnp.floor(trim_fraction * n.astype(jnp.float32)).astype(jnp.int32)
  return _sorted_band_mean(deltas, real, drop)


def pairwise_sq_distances(deltas: types.PyTree) -> types.Array:
  """[C, C] squared L2 distances between the clients' deltas (one row at a time)."""

  leaves = [x.reshape(x.shape[0], -1) for x in jax.tree.leaves(deltas)]  # [C, -1]: faster on CPU

  def row(i):
    return sum(jnp.sum(jnp.square(x - x[i]), axis=1) for x in leaves)

  return jax.lax.map(row, jnp.arange(leaves[0].shape[0]))


def krum_scores(deltas: types.PyTree, real: types.Array, num_byzantine: int) -> types.Array:
  """[C] Krum scores: the sum of squared distances to the ``n - f - 2`` nearest other real clients.

  The neighbour count is clipped to ``[1, n - 1]`` when a round has too few real
  clients for ``n - f - 2 >= 1`` (padding, failures); a lone real client scores 0.
  Excluded clients score ``+inf``.
  """
  num = real.shape[0]
  n = jnp.sum(real.astype(jnp.int32))
  dist = pairwise_sq_distances(_zero_out(deltas, real))
  other = real[None, :] & real[:, None] & ~jnp.eye(num, dtype=bool)
  srt = jnp.sort(jnp.where(other, dist, jnp.inf), axis=1)
  k = jnp.clip(n - num_byzantine - 2, 1, jnp.maximum(n - 1, 1))
  nearest = jnp.where(jnp.arange(num)[None, :] < k, srt, 0.0)
  score = jnp.where(n > 1, jnp.sum(nearest, axis=1), 0.0)
  return jnp.where(real, score, jnp.inf)


def multi_krum(deltas: types.PyTree, weights: types.Array, num_byzantine: int,
               multikrum_m: int = 0) -> types.PyTree:
  """Multi-Krum (Blanchard et al. 2017): the unweighted mean of the ``m`` lowest-scoring deltas.

  Args:
    deltas: stacked client deltas, leaves ``[C, ...]``.
    weights: [C] client weights (only ``> 0`` matters).
    num_byzantine: f, the number of Byzantine clients tolerated.
    multikrum_m: m; 0 = ``n - f`` (clipped to ``[1, n]``). ``m = 1`` is Krum.
      Ties in the score go to the lower client index.

  Returns:
    The aggregate delta (0 where no client is real).
  """
  real = real_clients(deltas, weights)
  n = jnp.sum(real.astype(jnp.int32))
  m = n - num_byzantine if multikrum_m == 0 else jnp.asarray(multikrum_m, jnp.int32)
  m = jnp.clip(m, 1, jnp.maximum(n, 1))
  order = jnp.argsort(krum_scores(deltas, real, num_byzantine), stable=True)
  rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
  chosen = (rank < m) & real
  return aggregate.weighted_mean(_zero_out(deltas, real), chosen.astype(jnp.float32))


def krum(deltas: types.PyTree, weights: types.Array, num_byzantine: int) -> types.PyTree:
  """Krum (Blanchard et al. 2017): the real client's delta with the lowest score."""
  return multi_krum(deltas, weights, num_byzantine, multikrum_m=1)


def geometric_median(deltas: types.PyTree, weights: types.Array, gm_iters: int = 10,
                     gm_nu: float = 1e-6) -> types.PyTree:
  """RFA's geometric median (Pillutla et al. 2022): smoothed Weiszfeld, client-weighted.

  Starts from the weighted mean ``v`` and runs ``gm_iters`` iterations of
  ``beta_i = alpha_i / max(nu, ||v - w_i||)``, ``v = sum beta_i w_i / sum beta_i``
  (``alpha_i``: the client weights, excluded clients 0) in a ``lax.fori_loop``.
  """
  real = real_clients(deltas, weights)
  alpha = jnp.where(real, weights, 0.0).astype(jnp.float32)
  x = _zero_out(deltas, real)

  def step(_, v):
    dist = aggregate.stacked_norm(jax.tree.map(lambda xi, vi: xi - vi[None], x, v))
    beta = alpha / jnp.maximum(gm_nu, dist)
    return aggregate.weighted_mean(x, beta)

  return jax.lax.fori_loop(0, gm_iters, step, aggregate.weighted_mean(x, alpha))


def norm_bounded_mean(deltas: types.PyTree, weights: types.Array, norm_bound: float) -> types.PyTree:
  """Every real delta scaled to L2 norm at most ``norm_bound``, then the client-weighted mean."""
  real = real_clients(deltas, weights)
  x = _zero_out(deltas, real)
  norms = aggregate.stacked_norm(x)
  scale = jnp.minimum(1.0, norm_bound / jnp.maximum(norms, aggregate.EPS))
  w = jnp.where(real, weights, 0.0).astype(jnp.float32)
  total = jnp.maximum(jnp.sum(w), aggregate.EPS)
  return jax.tree.map(lambda s: s / total, aggregate.weighted_sum(x, w * scale))
