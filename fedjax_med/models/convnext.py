"""ConvNeXt for 28-224 px inputs.

Liu et al., "A ConvNet for the 2020s", CVPR 2022. Each block is a depthwise
7x7 conv, LayerNorm (over channels, by design: there is no ``model.norm``
choice), a 4x inverted-bottleneck MLP with GELU, a learned per-channel layer
scale (init 1e-6) and stochastic depth (Huang et al. 2016) on the residual
branch. Stages are separated by LayerNorm + 2x2/stride-2 conv. The atto, femto
and pico sizes are those of ConvNeXt V2 (Woo et al. 2023) and timm.

**Adaptation to small inputs, by input size at call time:**

- Stem: 4x4/stride-4 patchify (standard) for inputs of at least
  ``layers.LARGE_INPUT`` px; 2x2/stride-2 below, so 28 px maps go through
  14, 7, 4 and 2 px stages (64 px: 32, 16, 8, 4; 224 px: 56, 28, 14, 7).
- Downsampling convs use SAME padding, so odd maps (7 px) round up instead of
  dropping a row; on even maps this is the standard VALID conv.
- The depthwise kernel is cropped to ``min(7, 2 * side - 1)`` on maps smaller
  than 4 px (3x3 on the last 2 px stage at 28 px). The taps cut off could only
  ever multiply SAME zero padding, so the function is the same as a 7x7 kernel
  there; this only saves parameters and FLOPs.

Stochastic depth draws from the ``"dropout"`` rng stream
(``model.apply(..., rngs={"dropout": key})``, which ``tasks.make_loss_fn``
passes) and is active only with ``train=True``; eval is deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med.models import layers

_dense_init = nn.initializers.truncated_normal(stddev=0.02)
_LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-6)


def drop_path(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Zeroes whole examples of a residual branch with probability ``rate``; rescales the rest.

  Args:
    x: [B, ...] branch output.
    rate: drop probability in [0, 1).
    rng: PRNG key.

  Returns:
    ``x * keep / (1 - rate)`` with ``keep`` ~ Bernoulli(1 - rate) per example.
  """
  keep = 1.0 - rate
  mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, jnp.zeros_like(x))


class Block(nn.Module):
  """dwconv k x k -> LN -> Dense 4C -> GELU -> Dense C -> layer scale -> drop path (+ input)."""

  kernel_size: int = 7
  drop_path_rate: float = 0.0
  layer_scale_init: float = 1e-6
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # [B, H, W, C]
    dim = x.shape[-1]
    kh, kw = (min(self.kernel_size, 2 * s - 1) for s in x.shape[1:3])
    y = layers.Conv(
        dim, (kh, kw), feature_group_count=dim, impl=self.conv_impl, kernel_init=_dense_init
    )(x)
    y = _LayerNorm()(y)
    y = nn.gelu(nn.Dense(4 * dim, kernel_init=_dense_init)(y))
    y = nn.Dense(dim, kernel_init=_dense_init)(y)
    if self.layer_scale_init > 0:
      scale = self.param(
          "layer_scale", nn.initializers.constant(self.layer_scale_init), (dim,), jnp.float32
      )
      y = y * scale.astype(y.dtype)
    if train and self.drop_path_rate > 0:
      y = drop_path(y, self.drop_path_rate, self.make_rng("dropout"))
    return x + y


class ConvNeXt(nn.Module):
  """ConvNeXt classifier.

  Attributes:
    num_classes: output logits.
    depths: blocks per stage.
    dims: channels per stage.
    kernel_size: depthwise kernel side (cropped on tiny maps, see module docstring).
    drop_path_rate: stochastic depth rate of the last block (linear from 0).
    layer_scale_init: initial layer scale (0 disables it).
    stem: ``"auto"`` (by input size), ``"small"`` (2x2/2) or ``"large"`` (4x4/4).
    conv_impl: lowering of the convolutions (``layers.IMPLS``).
  """

  num_classes: int
  depths: Sequence[int] = (2, 2, 6, 2)
  dims: Sequence[int] = (40, 80, 160, 320)
  kernel_size: int = 7
  drop_path_rate: float = 0.1
  layer_scale_init: float = 1e-6
  stem: str = "auto"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
    """[B, H, W, C] -> logits [B, num_classes]; ``mask`` is unused (no batch statistics)."""
    del mask
    if self.stem not in ("auto", "small", "large"):
      raise ValueError(f"stem must be auto, small or large, got {self.stem!r}")
    large = self.stem == "large" or (
        self.stem == "auto" and min(x.shape[1:3]) >= layers.LARGE_INPUT
    )
    conv = functools.partial(layers.Conv, impl=self.conv_impl, kernel_init=_dense_init)
    p = 4 if large else 2
    x = _LayerNorm()(conv(self.dims[0], (p, p), p, padding="VALID")(x))
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths)).tolist()
    k = 0
    for i, (depth, dim) in enumerate(zip(self.depths, self.dims, strict=True)):
      if i > 0:
        x = conv(dim, (2, 2), 2, padding="SAME")(_LayerNorm()(x))
      for _ in range(depth):
        x = Block(self.kernel_size, rates[k], self.layer_scale_init, self.conv_impl)(x, train)
        k += 1
    x = _LayerNorm()(jnp.mean(x, axis=(1, 2)))
    return nn.Dense(self.num_classes, kernel_init=_dense_init)(x)


# Not a published size: 4 stages like atto at 0.6x width and half the depth
# (~15 MFLOPs at 28 px, like ResNet-8), for CPU-sized architecture studies.
ConvNeXtXS = functools.partial(ConvNeXt, depths=(1, 1, 3, 1), dims=(24, 48, 96, 192))
ConvNeXtAtto = functools.partial(ConvNeXt, depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))
ConvNeXtFemto = functools.partial(ConvNeXt, depths=(2, 2, 6, 2), dims=(48, 96, 192, 384))
ConvNeXtPico = functools.partial(ConvNeXt, depths=(2, 2, 6, 2), dims=(64, 128, 256, 512))
ConvNeXtTiny = functools.partial(ConvNeXt, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
# Test variant: a 3x3 depthwise kernel keeps its compile short (the 7x7 im2col lowering
# unrolls 49 taps); `layers_test` checks the 7x7 lowering itself.
_ConvNeXtMu = functools.partial(ConvNeXt, depths=(1, 1), dims=(8, 16), kernel_size=3)
