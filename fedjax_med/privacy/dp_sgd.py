"""Record-level differential privacy: DP-SGD inside every client (Abadi et al. 2016).

Every local step of every client: the gradient of each example alone
(``jax.vmap`` over the batch, itself inside the vmapped client), each clipped to
L2 norm ``clip_norm``, summed over the step's real examples, plus Gaussian noise
of std ``noise_multiplier * clip_norm``, divided by the fixed expected batch size
``batch_size`` (never by the number drawn: that count is private). The step's
batch is a Poisson sample of the client's records (``batching.
make_poisson_client_batch``): the sampled Gaussian mechanism that
``privacy.accounting`` composes. A step whose sample is empty still runs and
adds noise (``local.run_steps(active=...)``): it is one of the accounted steps.

This protects every patient record of a client against anyone who sees what
the client sends (the server, other sites, the final model), with the client's
own epsilon from its sampling rate and number of steps.

Models with BatchNorm are refused by the config (their batch statistics mix
examples, so a per-example gradient does not exist); GroupNorm and LayerNorm are
per example.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from fedjax_med import types
from fedjax_med.algorithms import aggregate
from fedjax_med.privacy import mechanisms


class RecordDP(NamedTuple):
  """DP-SGD's parameters.

  Attributes:
    clip_norm: C, every per-example gradient is clipped to L2 norm C.
    noise_multiplier: sigma; the noise on the clipped sum has std sigma * C.
    batch_size: the expected examples per step, the fixed denominator.
  """

  clip_norm: float
  noise_multiplier: float
  batch_size: int


def grad_fn(loss_fn: types.LossFn, dp: RecordDP):
  """A ``local.GradFn`` computing DP-SGD's privatized gradient from ``loss_fn``.

  ``loss_fn`` is called on one-example batches (``mask`` [1]); its masked mean
  is the example's loss, and 0 with a zero gradient for a padding slot.

  Returns:
    ``grad_fn(params, batch, rng) -> ((loss, aux), grads)``: ``loss`` is the mean
    loss over the step's real examples, ``aux`` has ``clipped_fraction`` (of the
    real examples) and ``grads`` is the noised mean of clipped gradients.
  """
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def one_example(params, example, key):
    batch = jax.tree.map(lambda x: x[None], example)
    (loss, _), grads = value_and_grad(params, batch, key)
    return loss, grads

  def privatized(params, batch, rng):
    mask = batch["mask"]
    noise_key, example_rng = jax.random.split(rng)
    keys = jax.random.split(example_rng, mask.shape[0])
    losses, grads = jax.vmap(one_example, in_axes=(None, 0, 0))(params, batch, keys)
    # Clip and sum as one contraction over the examples: sum_i f_i g_i with
    # f_i = mask_i * min(1, C / ||g_i||) (jax_privacy's clip_pytree, NaN-safe). Scaling
    # every g_i and then reducing over the example axis is ~15x slower on XLA:CPU
    # (bench/privacy_speed.py); the example axis is never sharded, so tensordot is safe.
    grads = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0), grads)
    norms = aggregate.stacked_norm(grads)
    real = mask.astype(jnp.float32)
    factor = real * jnp.minimum(1.0, dp.clip_norm / jnp.maximum(norms, 1e-30))
    total = jax.tree.map(lambda g: jnp.tensordot(factor.astype(g.dtype), g, axes=1), grads)
    noise = mechanisms.gaussian_noise(
        noise_key, total, mechanisms.noise_std(dp.noise_multiplier, dp.clip_norm))
    grads = jax.tree.map(lambda g, z: (g + z) / dp.batch_size, total, noise)
    count = jnp.maximum(jnp.sum(real), 1.0)
    loss = jnp.sum(losses * real) / count
    clipped_fraction = jnp.sum((norms > dp.clip_norm) * real) / count
    return (loss, {"clipped_fraction": clipped_fraction}), grads

  return privatized
