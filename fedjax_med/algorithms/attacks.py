"""Simulated malicious clients, inside the round (issue 16, part 4).

A seeded, fixed set of the federation's clients is malicious for the whole run
(:func:`choose_malicious`); an :class:`Attack` in ``RoundPlan.attack`` says what
they do. Honest clients are never touched. Two families:

- **data poisoning** (``label_flip``): a malicious client trains honestly on
  flipped labels ``y -> K - 1 - y`` (binary: 0 <-> 1). Multi-label data
  (ChestMNIST) flips every label the same way, ``y_l -> 1 - y_l``: each finding
  is a binary task, so a "no finding" image is labelled with every finding and
  the reverse. It needs nothing but its own data, so it costs nothing extra.
- **model poisoning**: a malicious client trains, then replaces the update it
  sends (Byzantine clients; the server sees only the update):

  ==============  ==================================================  ==============
  kind            what a malicious client sends                        ``scale``
  ==============  ==================================================  ==============
  ``sign_flip``   ``-s * delta`` (its own update, reversed)             s, default 1
  ``scaling``     ``s * delta`` (model replacement, Bagdasaryan         s, default 10
                  et al. 2020: boosted so it survives averaging)
  ``gaussian``    ``N(0, s^2)`` per coordinate                         s, default 1
  ``alie``        ``mu - z * sigma`` ("a little is enough", Baruch     z, default the
                  et al. 2019): per coordinate, the honest clients'     paper's z_max
                  mean minus z of their standard deviations
  ``ipm``         ``-eps * mu`` (inner product manipulation, Xie       eps, default
                  et al. 2020): against the honest mean                 0.1
  ==============  ==================================================  ==============

  ``alie`` and ``ipm`` are *omniscient and colluding*, as in their papers: the
  malicious clients know this round's honest updates (``mu``, ``sigma``: the
  unweighted mean and standard deviation over the round's honest clients that
  reported; sigma the population standard deviation) and all send the same
  vector. ``z_max`` is Baruch et al.'s
  ``Phi^-1((n - s) / n)`` with ``s = floor(n / 2 + 1) - m`` for ``n`` clients
  of which ``m`` are malicious in this round (counted in the round: padding,
  dropout and failures vary it).

Model poisoning needs every client's update at once, so a round with such an
attack holds the stacked deltas (``C x params`` memory, as the robust
aggregators do) even when it aggregates with the mean. A malicious client that
dropped out or failed sends nothing. Malicious clients keep their aggregation
weight (their example count): a weighted mean gives them the influence their
claimed size buys, which is part of the threat.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med import types
from fedjax_med.algorithms import aggregate

DATA_KINDS = ("label_flip",)
UPDATE_KINDS = ("sign_flip", "scaling", "gaussian", "alie", "ipm")
KINDS = ("none",) + DATA_KINDS + UPDATE_KINDS
# attack.scale = 0 takes these (alie: 0 = Baruch et al.'s z_max from n and m).
DEFAULT_SCALE = {"label_flip": 0.0, "sign_flip": 1.0, "scaling": 10.0, "gaussian": 1.0,
                 "alie": 0.0, "ipm": 0.1}
# The malicious set's seed stream: independent of the partition's and the model's.
SEED_STREAM = 0xA77AC


class Attack(NamedTuple):
  """What the malicious clients do (see the module docstring).

  Attributes:
    kind: one of ``DATA_KINDS + UPDATE_KINDS``.
    malicious: the malicious clients' ids in ``[0, num_clients)``, sorted.
    num_clients: N, the federation's clients.
    scale: the kind's strength (``DEFAULT_SCALE`` when built with 0).
    num_classes: K (``label_flip``).
    multi_label: labels are ``[..., L]`` in {0, 1}; ``label_flip`` flips each of them.
  """

  kind: str
  malicious: tuple[int, ...]
  num_clients: int
  scale: float = 0.0
  num_classes: int = 0
  multi_label: bool = False

  @property
  def poisons_updates(self) -> bool:
    return self.kind in UPDATE_KINDS


def num_malicious(num_clients: int, fraction: float) -> int:
  """``round(fraction * N)`` clients of N are malicious."""
  return int(round(fraction * num_clients))


def choose_malicious(num_clients: int, fraction: float, seed: int) -> tuple[int, ...]:
  """The seeded malicious set: ``round(fraction * N)`` distinct ids, sorted."""
  m = num_malicious(num_clients, fraction)
  rng = np.random.default_rng([int(seed), SEED_STREAM])
  return tuple(sorted(int(i) for i in rng.choice(num_clients, size=m, replace=False)))


def make(kind: str, num_clients: int, fraction: float, seed: int, scale: float = 0.0,
         num_classes: int = 0, multi_label: bool = False) -> Attack | None:
  """An :class:`Attack` on a seeded ``fraction`` of ``num_clients`` (``None`` for ``"none"``).

  ``multi_label``: the data's labels are ``[..., L]`` in {0, 1} (``label_flip``
  flips each one); ``num_classes`` is then L.

  Raises:
    ValueError: unknown kind, fraction outside [0, 1), a negative or non-finite
      scale, a scale for ``label_flip``, or ``label_flip`` without ``num_classes >= 2``.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown attack kind {kind!r}; choose one of {list(KINDS)}")
  if not 0 <= fraction < 1:
    raise ValueError(f"attack fraction={fraction!r} must be in [0, 1)")
  if not (np.isfinite(scale) and scale >= 0):
    raise ValueError(f"attack scale={scale!r} must be a finite number >= 0 (0 = the default)")
  if kind == "none":
    return None
  if kind == "label_flip":
    if scale != 0:
      raise ValueError(f"attack scale={scale!r}: label_flip takes no scale (leave it 0)")
    if num_classes < 2:
      raise ValueError(f"label_flip needs num_classes >= 2, got {num_classes}")
  return Attack(kind, choose_malicious(num_clients, fraction, seed), num_clients,
                float(scale or DEFAULT_SCALE[kind]), int(num_classes), bool(multi_label))


def malicious_slots(attack: Attack, client_id: types.Array, weight: types.Array) -> types.Array:
  """[C] bool: the round's slots that hold a malicious client that reports (weight > 0)."""
  table = np.zeros((attack.num_clients,), bool)
  table[list(attack.malicious)] = True
  ids = jnp.clip(client_id, 0, attack.num_clients - 1)
  return jnp.asarray(table)[ids] & (client_id >= 0) & (weight > 0)


def poison_data(attack: Attack, clients: types.ClientBatch) -> types.ClientBatch:
  """The round's batch with the malicious clients' labels flipped (``label_flip``; else as is).

  ``y -> K - 1 - y``, or for multi-label ``[C, S, B, L]`` labels ``y_l -> 1 - y_l``.
  """
  if attack.kind != "label_flip":
    return clients
  mal = malicious_slots(attack, clients.client_id, clients.weight)
  mal = mal.reshape(mal.shape + (1,) * (clients.label.ndim - 1))
  top = 1 if attack.multi_label else attack.num_classes - 1
  flipped = (top - clients.label).astype(clients.label.dtype)
  return clients._replace(label=jnp.where(mal, flipped, clients.label))


def alie_z(n: types.Array, m: types.Array) -> types.Array:
  """Baruch et al.'s ``z_max = Phi^-1((n - s) / n)``, ``s = floor(n / 2 + 1) - m``.

  ``(n - s) / n`` is clipped to ``[0.5, 0.999]``: below 0.5 only when ``m = 0`` (no
  attacker), and 1 (``z = inf``) when the malicious clients are a majority, where
  ``z`` is capped at ``Phi^-1(0.999) = 3.09``.
  """
  n = n.astype(jnp.float32)
  s = jnp.floor(n / 2 + 1) - m.astype(jnp.float32)
  p = jnp.clip((n - s) / jnp.maximum(n, 1.0), 0.5, 0.999)  # p < 1/2 only when m = 0
  return jax.scipy.special.ndtri(p)


def poison_updates(attack: Attack, deltas: types.PyTree, malicious: types.Array,
                   weight: types.Array, key: types.PRNGKey) -> types.PyTree:
  """The stacked deltas ``[C, ...]`` with the malicious rows replaced (model poisoning).

  Args:
    deltas: every client's delta (0 for padding and failed clients).
    malicious: [C] bool, :func:`malicious_slots` (reporting malicious clients).
    weight: [C] the round's weights, 0 for padding and failed clients.
    key: the round's attack key (``gaussian``; client ``c`` uses ``fold_in(key, c)``).
  """
  if not attack.poisons_updates:
    return deltas
  s = jnp.float32(attack.scale)
  honest = (weight > 0) & ~malicious
  h = honest.astype(jnp.float32)
  count = jnp.maximum(jnp.sum(h), 1.0)

  def honest_mean(x):  # x: [C, -1] (XLA:CPU reduces the flat view far faster)
    hx = h[:, None].astype(x.dtype)
    return jnp.sum(hx * x, axis=0) / count.astype(x.dtype), hx

  def replace(x, bad):
    mal = malicious.reshape(malicious.shape + (1,) * (x.ndim - 1))
    return jnp.where(mal, jnp.broadcast_to(bad, x.shape).astype(x.dtype), x)

  def flat(fn):  # fn on the [C, -1] view of a leaf, the result back in its shape
    return lambda leaf: fn(leaf.reshape(leaf.shape[0], -1)).reshape(leaf.shape)

  if attack.kind == "sign_flip":
    return jax.tree.map(lambda x: replace(x, -s * x), deltas)
  if attack.kind == "scaling":
    return jax.tree.map(lambda x: replace(x, s * x), deltas)
  if attack.kind == "gaussian":
    leaves, treedef = jax.tree.flatten(deltas)
    num = leaves[0].shape[0] if leaves else 0
    keys = jax.vmap(lambda c: jax.random.fold_in(key, c))(jnp.arange(num))
    noise = []
    for i, x in enumerate(leaves):
      draw = jax.vmap(lambda k, shape=x.shape[1:], dtype=x.dtype, i=i: jax.random.normal(
          jax.random.fold_in(k, i), shape, dtype))(keys)
      noise.append(replace(x, s * draw))
    return jax.tree.unflatten(treedef, noise)
  if attack.kind == "ipm":
    return jax.tree.map(flat(lambda x: replace(x, -s * honest_mean(x)[0][None])), deltas)
  # alie
  n = jnp.sum((weight > 0).astype(jnp.int32))
  m = jnp.sum(malicious.astype(jnp.int32))
  z = jnp.where(s > 0, s, alie_z(n, m))

  def alie(x):
    mu, hx = honest_mean(x)
    var = jnp.sum(hx * jnp.square(x - mu[None]), axis=0) / count.astype(x.dtype)
    return replace(x, (mu - z.astype(x.dtype) * jnp.sqrt(var))[None])

  return jax.tree.map(flat(alie), deltas)


def update_norms(deltas: types.PyTree, weight: types.Array) -> types.Array:
  """[C] the L2 norm of what each client sent (0 for padding and failed clients)."""
  return aggregate.stacked_norm(deltas) * (weight > 0)
