"""Client-level differential privacy: DP-FedAvg (McMahan et al. 2018) with adaptive
clipping (Andrew et al. 2021), inside the one jitted round.

Each round: every client's model delta is clipped to L2 norm ``C`` (the round's
clip norm), the server sums the clipped deltas of the clients that took part
(each weighs 1, whatever its size), adds Gaussian noise of std
``noise_multiplier * C`` and divides by the *expected* number of clients
``m = q N`` (a fixed denominator: the real count is private). Clients take part
by Poisson sampling with rate ``q`` (``batching.sample_clients_poisson``), the
sampled Gaussian mechanism that ``privacy.accounting`` composes once per round.

Adaptive clipping (``target_quantile`` set): every client also reports the bit
``||delta|| <= C``; the server privatizes their count with Gaussian noise of std
``count_noise`` and moves ``C <- C * exp(-clip_lr * (b - target_quantile))``
with ``b`` the noised fraction, so ``C`` tracks the target quantile of the
update norms. The two releases share the privacy budget: with total noise
multiplier ``z`` (what the accountant sees), the deltas get
``z_delta = (z^-2 - (2 count_noise)^-2)^(-1/2)`` (Andrew et al., Theorem 1).

This protects a whole site's contribution (every record of it at once), the
cross-device notion; the noise is added by the server (central DP), so the
clients trust the server with their clipped updates.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.privacy import mechanisms

# fold_in constant of the server's noise key (client keys are split(fold_in(rng, round), C)).
NOISE_STREAM = 0x44502D46


class ClientDP(NamedTuple):
  """DP-FedAvg's parameters.

  Attributes:
    noise_multiplier: z, what the accountant composes (the total, both releases
      of adaptive clipping included).
    expected_clients: m = q N, the fixed denominator.
    clip_norm: C at round 0 (fixed clipping: always).
    target_quantile: adaptive clipping's target quantile of the update norms in
      (0, 1); ``None`` = fixed clipping.
    clip_lr: adaptive clipping's geometric step size (Andrew et al.: 0.2).
    count_noise: std of the noise on the count of unclipped clients; ``None`` =
      ``expected_clients / 20`` (Andrew et al.). Must exceed ``z / 2``.
  """

  noise_multiplier: float
  expected_clients: float
  clip_norm: float
  target_quantile: float | None = None
  clip_lr: float = 0.2
  count_noise: float | None = None

  @property
  def adaptive(self) -> bool:
    return self.target_quantile is not None

  def count_std(self) -> float:
    """The std of the noise on the unclipped count (0 with fixed clipping)."""
    if not self.adaptive:
      return 0.0
    return self.expected_clients / 20.0 if self.count_noise is None else self.count_noise

  def delta_noise_multiplier(self) -> float:
    """z_delta: the noise multiplier of the deltas' sum (z with fixed clipping).

    Raises:
      ValueError: adaptive clipping whose count noise leaves no budget for the deltas.
    """
    z = self.noise_multiplier
    if not self.adaptive or z == 0:
      return z
    s = self.count_std()
    if not 2 * s > z:
      raise ValueError(
          f"adaptive clipping needs count noise std > noise_multiplier / 2 ({z / 2:g}), got "
          f"{s:g}: raise privacy.count_noise or lower the noise multiplier")
    return 1.0 / math.sqrt(z ** -2 - (2 * s) ** -2)


class ClientDPState(NamedTuple):
  """The server's privacy state (in ``ServerState.privacy``; checkpointed)."""

  clip_norm: types.Array  # [] float32: this round's clip norm C


def init(dp: ClientDP) -> ClientDPState:
  return ClientDPState(jnp.asarray(dp.clip_norm, jnp.float32))


class Released(NamedTuple):
  """What a DP-FedAvg round releases."""

  pseudo_grad: types.PyTree  # (sum of clipped deltas + noise) / m
  state: ClientDPState  # the next round's clip norm
  unclipped_fraction: types.Array  # [] the noised fraction b (adaptive), else the true one


def release(dp: ClientDP, state: ClientDPState, clipped_sum: types.PyTree, norms: types.Array,
            real: types.Array, key: types.PRNGKey) -> Released:
  """The noised mean of the clipped deltas and the next clip norm.

  Args:
    dp: the mechanism.
    state: the round's clip norm.
    clipped_sum: sum over the real clients of their deltas clipped to ``state.clip_norm``.
    norms: [C] every client's delta norm before clipping.
    real: [C] bool, False for padding clients.
    key: the server's noise key of this round.
  """
  delta_key, count_key = jax.random.split(key)
  c = state.clip_norm
  noise = mechanisms.gaussian_noise(delta_key, clipped_sum,
                                    mechanisms.noise_std(dp.delta_noise_multiplier(), c))
  m = dp.expected_clients
  pseudo_grad = jax.tree.map(lambda s, z: (s + z) / m, clipped_sum, noise)
  unclipped = jnp.sum(((norms <= c) & real).astype(jnp.float32))
  if dp.adaptive:
    b = (unclipped + dp.count_std() * jax.random.normal(count_key, ())) / m
    c = c * jnp.exp(-dp.clip_lr * (b - dp.target_quantile))
  else:
    b = unclipped / jnp.maximum(jnp.sum(real.astype(jnp.float32)), 1.0)
  return Released(pseudo_grad, ClientDPState(c.astype(jnp.float32)), b)


def clip_deltas(deltas: types.PyTree, clip_norm) -> types.PyTree:
  """Each client's delta (leaves [C, ...]) clipped to ``clip_norm``."""
  return jax.vmap(lambda d: mechanisms.clip(d, clip_norm)[0])(deltas)

