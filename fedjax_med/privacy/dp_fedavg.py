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
``||delta|| <= C``; the server sums the centred bits ``bit - 1/2`` (one client
changes that sum by at most 1/2: the sensitivity the noise split below assumes,
as TF Privacy's ``QuantileEstimatorQuery``), adds Gaussian noise of std
``count_noise``, and with ``b = noised sum / m + 1/2`` (clipped to [0, 1]) moves
``C <- C * exp(-clip_lr * (b - target_quantile))``, so ``C`` tracks the target
quantile of the update norms. The two releases share the privacy budget: with total noise
multiplier ``z`` (what the accountant sees), the deltas get
``z_delta = (z^-2 - (2 count_noise)^-2)^(-1/2)`` (Andrew et al., Theorem 1).

Correlated noise (``strategy`` set): banded matrix factorization (BandMF,
Choquette-Choo et al. 2023, "(Amplified) Banded Matrix Factorization"), the
noise of production cross-device training. Round t adds ``y_t`` with ``y =
C^-1 z``, ``z`` the independent Gaussian draws and ``C`` the lower-triangular
banded Toeplitz strategy of ``b = len(strategy)`` bands with unit-norm
coefficients (``jax_privacy.matrix_factorization.toeplitz.
optimize_banded_toeplitz``), so that consecutive noises partly cancel in the
model (a sum of updates) while each client's contribution still has
sensitivity 1. ``y_t = (z_t - sum_{j=1}^{b-1} c_j y_{t-j}) / c_0``: the state
keeps the last ``b - 1`` noises. The analysis needs every client's
participations at least ``b`` rounds apart: clients are split into ``b`` fixed
groups and group ``t mod b`` is Poisson-sampled in round t
(``batching.sample_clients_cyclic_poisson``); the accountant then composes
``ceil(T / b)`` sampled Gaussians at rate ``b q`` (the reduction of the paper,
as ``jax_privacy.accounting.DpsgdTrainingAccountant`` with ``cycle_length=b``).
``b = 1`` is the independent Gaussian mechanism.

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
    strategy: BandMF's Toeplitz coefficients ``c_0..c_{b-1}`` (unit L2 norm);
      ``None`` = independent noise. Not with adaptive clipping.
  """

  noise_multiplier: float
  expected_clients: float
  clip_norm: float
  target_quantile: float | None = None
  clip_lr: float = 0.2
  count_noise: float | None = None
  strategy: tuple[float, ...] | None = None

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
  # BandMF: the last b - 1 noises y_{t-1}, ..., y_{t-b+1} (unit scale), stacked [b - 1, ...];
  # None for independent noise
  history: types.PyTree = None


def init(dp: ClientDP, params: types.Params | None = None) -> ClientDPState:
  """The state at round 0 (``params``: the shapes of BandMF's noise history)."""
  history = None
  if dp.strategy is not None and len(dp.strategy) > 1:
    if params is None:
      raise ValueError("BandMF keeps a noise history shaped like the model: pass params")
    history = jax.tree.map(
        lambda p: jnp.zeros((len(dp.strategy) - 1,) + jnp.shape(p), jnp.float32), params)
  return ClientDPState(jnp.asarray(dp.clip_norm, jnp.float32), history)


def correlated(dp: ClientDP, z: types.PyTree, history: types.PyTree):
  """BandMF's noise of this round from the fresh draw ``z``: ``(y_t, new history)``."""
  c = dp.strategy
  if history is None:  # one band: y = z / c_0
    return jax.tree.map(lambda x: x / c[0], z), None

  y = jax.tree.map(lambda zl, hl: (zl - sum(c[j] * hl[j - 1] for j in range(1, len(c)))) / c[0],
                   z, history)
  new = jax.tree.map(lambda yl, hl: jnp.concatenate([yl[None], hl[:-1]]), y, history)
  return y, new


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
  history = state.history
  if dp.strategy is None:
    noise = mechanisms.gaussian_noise(delta_key, clipped_sum,
                                      mechanisms.noise_std(dp.delta_noise_multiplier(), c))
  else:
    y, history = correlated(dp, mechanisms.gaussian_noise(delta_key, clipped_sum, 1.0), history)
    std = mechanisms.noise_std(dp.noise_multiplier, c)
    noise = jax.tree.map(lambda v: v * jnp.asarray(std, v.dtype), y)
  m = dp.expected_clients
  pseudo_grad = jax.tree.map(lambda s, z: (s + z) / m, clipped_sum, noise)
  below = ((norms <= c) & real).astype(jnp.float32)
  unclipped = jnp.sum(below)
  if dp.adaptive:  # centred bits: sensitivity 1/2 (Andrew et al.'s split assumes it)
    centred = jnp.sum((below - 0.5) * real.astype(jnp.float32))
    b = (centred + dp.count_std() * jax.random.normal(count_key, ())) / m + 0.5
    b = jnp.clip(b, 0.0, 1.0)
    c = c * jnp.exp(-dp.clip_lr * (b - dp.target_quantile))
  else:
    b = unclipped / jnp.maximum(jnp.sum(real.astype(jnp.float32)), 1.0)
  return Released(pseudo_grad, ClientDPState(c.astype(jnp.float32), history), b)


def clip_deltas(deltas: types.PyTree, clip_norm) -> types.PyTree:
  """Each client's delta (leaves [C, ...]) clipped to ``clip_norm``."""
  return jax.vmap(lambda d: mechanisms.clip(d, clip_norm)[0])(deltas)

