"""Client drift and the (dis)agreement of client updates and gradients.

Client drift (Karimireddy et al., "SCAFFOLD", ICML 2020) is how far local
training moves each client from the server model; heterogeneous clients also
pull in different directions, which shows as low cosine similarity and high
dispersion of their updates ``server - client`` or of their gradients at the
global model. ``dissimilarity`` is ``sum_i p_i ||g_i||^2 / ||sum_i p_i g_i||^2``,
the B^2 of the (G, B)-gradient dissimilarity of that paper (1 when all
clients agree). Stacked inputs are pytrees whose leaves have a leading client
axis C; weights ``[C]`` (e.g. example counts, 0 = padding client) default to uniform.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from fedjax_med import types

_HI = jax.lax.Precision.HIGHEST
_EPS = 1e-30


def tree_distance(a: types.Params, b: types.Params) -> jax.Array:
  """``||a - b||_2`` over all leaves."""
  return optax.tree.norm(optax.tree.sub(a, b))


def solution_distance(a: types.Params, b: types.Params) -> dict[str, jax.Array]:
  """Distance between two solutions: ``distance``, ``relative`` (to ``||a||``) and ``cosine``."""
  dist = tree_distance(a, b)
  na, nb = optax.tree.norm(a), optax.tree.norm(b)
  return {
      "distance": dist,
      "relative": dist / jnp.maximum(na, _EPS),
      "cosine": optax.tree.vdot(a, b) / jnp.maximum(na * nb, _EPS),
  }


def flatten_stacked(stacked: types.PyTree) -> jax.Array:
  """``[C, n]``: each client's pytree raveled (leaves ``[C, ...]``)."""
  return jax.vmap(lambda t: ravel_pytree(t)[0])(stacked)


def client_drift(client_params: types.PyTree, server_params: types.Params) -> jax.Array:
  """``[C]`` distances ``||client_params[i] - server_params||``."""
  deltas = jax.tree.map(lambda c, s: c - s[None], client_params, server_params)
  return jnp.linalg.norm(flatten_stacked(deltas), axis=-1)


def cosine_matrix(stacked: types.PyTree) -> jax.Array:
  """``[C, C]`` cosine similarities between the clients' vectors (0 for a zero vector)."""
  x = flatten_stacked(stacked)
  norms = jnp.linalg.norm(x, axis=-1)
  gram = jnp.dot(x, x.T, precision=_HI)
  return gram / jnp.maximum(norms[:, None] * norms[None, :], _EPS)


class Alignment(NamedTuple):
  """Agreement of C client vectors (updates or gradients)."""

  norms: jax.Array  # [C] ||u_i||
  cosine_to_mean: jax.Array  # [C] cos(u_i, weighted mean)
  mean_pairwise_cosine: jax.Array  # [] weighted mean of cos(u_i, u_j), i != j
  mean_norm: jax.Array  # [] ||weighted mean||
  dispersion: jax.Array  # [] sum_i p_i ||u_i - mean||^2
  relative_dispersion: jax.Array  # [] dispersion / ||mean||^2
  dissimilarity: jax.Array  # [] sum_i p_i ||u_i||^2 / ||mean||^2 (= 1 + relative_dispersion)


def alignment(stacked: types.PyTree, weights: jax.Array | None = None) -> Alignment:
  """Cosine similarities and dispersion of stacked client vectors.

  Args:
    stacked: pytree with leaves ``[C, ...]`` (client updates or gradients).
    weights: ``[C]`` nonnegative weights; zero-weight clients drop out of the
      means. Default uniform.

  Returns:
    An :class:`Alignment`.
  """
  x = flatten_stacked(stacked)  # [C, n]
  c = x.shape[0]
  w = jnp.ones((c,), x.dtype) if weights is None else jnp.asarray(weights, x.dtype)
  p = w / jnp.maximum(jnp.sum(w), _EPS)
  mean = jnp.dot(p, x, precision=_HI)
  norms = jnp.linalg.norm(x, axis=-1)
  mean_norm = jnp.linalg.norm(mean)
  cos = cosine_matrix(stacked)
  cos_mean = jnp.dot(x, mean, precision=_HI) / jnp.maximum(norms * mean_norm, _EPS)
  pair = p[:, None] * p[None, :] * (1.0 - jnp.eye(c, dtype=x.dtype))
  mean_cos = jnp.sum(pair * cos) / jnp.maximum(jnp.sum(pair), _EPS)
  dispersion = jnp.dot(p, jnp.sum((x - mean) ** 2, axis=-1), precision=_HI)
  sq_mean = jnp.maximum(mean_norm**2, _EPS)
  return Alignment(
      norms=norms,
      cosine_to_mean=cos_mean,
      mean_pairwise_cosine=mean_cos,
      mean_norm=mean_norm,
      dispersion=dispersion,
      relative_dispersion=dispersion / sq_mean,
      dissimilarity=jnp.dot(p, norms**2, precision=_HI) / sq_mean,
  )


def client_updates(client_params: types.PyTree, server_params: types.Params) -> types.PyTree:
  """Stacked updates ``server_params - client_params[i]`` (the sign of the round's deltas)."""
  return jax.tree.map(lambda c, s: s[None] - c, client_params, server_params)


def client_gradients(
    client_loss_fn: Callable[[types.Params, types.PyTree], jax.Array],
    params: types.Params,
    client_data: types.PyTree,
) -> types.PyTree:
  """Each client's gradient at the global ``params`` (``lax.map`` over clients).

  Args:
    client_loss_fn: ``client_loss_fn(params, data) -> scalar`` loss on one client's data.
    params: the global model.
    client_data: pytree with leaves ``[C, ...]``.

  Returns:
    Gradients stacked ``[C, ...]`` like ``params``.
  """
  return jax.lax.map(lambda d: jax.grad(client_loss_fn)(params, d), client_data)


def gradient_alignment(
    client_loss_fn: Callable[[types.Params, types.PyTree], jax.Array],
    params: types.Params,
    client_data: types.PyTree,
    weights: jax.Array | None = None,
) -> Alignment:
  """:func:`alignment` of the clients' gradients at the global model."""
  return alignment(client_gradients(client_loss_fn, params, client_data), weights)


# Metrics where larger is better; for the others (loss) smaller is better.
_HIGHER_IS_BETTER = ("accuracy", "auc")


def generalization_gap(
    train: dict, test: dict, keys: tuple[str, ...] = ("loss", "accuracy", "auc")
) -> dict[str, float]:
  """Per-metric gap between two metric dicts (e.g. ``metrics.jsonl`` records), positive when
  the test side is worse: ``loss`` test - train; ``accuracy`` and ``auc`` train - test.

  Args:
    train: metrics on the training data.
    test: the same metrics on held-out data.
    keys: metrics to compare; those missing from either dict are skipped.
  """
  gaps = {}
  for key in keys:
    if key in train and key in test:
      a, b = float(train[key]), float(test[key])
      gaps[key] = a - b if key in _HIGHER_IS_BETTER else b - a
  return gaps
