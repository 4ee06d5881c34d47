"""CIFAR-style ResNets for small (28-64 px) medical images, with a choice of norm.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (the
6n+2 CIFAR variant). ``norm`` selects BatchNorm, GroupNorm (Wu & He 2018;
Hsieh et al. 2020 recommend it for non-IID federated training) or LayerNorm
(over H, W and C of each example). BatchNorm keeps ``batch_stats``, which the
round averages like parameters; its statistics ignore padding examples.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_med.models import layers

NORMS = ("batch", "group", "layer")


class Norm(nn.Module):
  """BatchNorm / GroupNorm / LayerNorm behind one interface."""

  kind: str = "group"
  num_groups: int = 8
  zero_init: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None) -> jax.Array:
    scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
    if self.kind == "batch":
      m = None if mask is None else mask.reshape(mask.shape + (1,) * (x.ndim - 1))
      bn = nn.BatchNorm(use_running_average=not train, momentum=0.9, scale_init=scale_init)
      return bn(x, mask=m) if m is not None else bn(x)
    if self.kind == "group":
      groups = self.num_groups if x.shape[-1] % self.num_groups == 0 else 1
      return nn.GroupNorm(num_groups=groups, scale_init=scale_init)(x)
    if self.kind == "layer":
      return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, scale_init=scale_init)(x)
    raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")


class BasicBlock(nn.Module):
  features: int
  strides: int = 1
  norm: str = "group"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, train: bool, mask):
    conv = functools.partial(layers.Conv, use_bias=False, impl=self.conv_impl)
    y = conv(self.features, (3, 3), self.strides)(x)
    y = nn.relu(Norm(self.norm)(y, train, mask))
    y = conv(self.features, (3, 3))(y)
    y = Norm(self.norm, zero_init=True)(y, train, mask)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), self.strides)(x)
      x = Norm(self.norm)(x, train, mask)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet with ``len(stage_sizes)`` stages of BasicBlocks.

  Attributes:
    num_classes: output logits.
    stage_sizes: blocks per stage; stage i has ``width * 2**i`` channels and
      (for i > 0) starts with a stride-2 block.
    width: channels of the stem and first stage.
    norm: ``"batch"``, ``"group"`` or ``"layer"``.
    conv_impl: lowering of convolutions (``layers.IMPLS``).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (1, 1, 1)
  width: int = 16
  norm: str = "group"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    x = layers.Conv(self.width, (3, 3), use_bias=False, impl=self.conv_impl)(x)
    x = nn.relu(Norm(self.norm)(x, train, mask))
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(self.width * 2**i, strides, self.norm, self.conv_impl)(x, train, mask)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


ResNet8 = functools.partial(ResNet, stage_sizes=(1, 1, 1), width=16)
ResNet14 = functools.partial(ResNet, stage_sizes=(2, 2, 2), width=16)
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), width=16)
_ResNet1 = functools.partial(ResNet, stage_sizes=(1,), width=4)
