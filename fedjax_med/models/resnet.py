"""ResNets for 28-224 px medical images, with a choice of normalization.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016: the
CIFAR-style 6n+2 nets (ResNet-8/14/20: three stages of BasicBlocks, widths
16-64) and the ImageNet ResNet-18 (BasicBlock [2, 2, 2, 2]) and ResNet-50
(Bottleneck [3, 4, 6, 3], stride on the 3x3 conv as in "v1.5"), widths 64-512
(x4 for Bottleneck outputs).

**Stem, by input size at call time** (``stem="auto"``): inputs smaller than
``layers.LARGE_INPUT`` (28 and 64 px) get a 3x3/stride-1 conv and no pooling,
so a 28 px image is not reduced to 7 px before the first block; 128 and 224 px
inputs get the standard 7x7/stride-2 conv followed by a stride-2 max-pool. That
pool is 2x2 non-overlapping (``layers.max_pool``, the reshape lowering whose
gradient is cheap on CPU) instead of the usual 3x3/stride-2 one, on every
backend, so that both conv lowerings compute the same function; the output
size is the same for even inputs.

**Normalization** (``norm``): ``"batch"`` (BatchNorm), ``"group"`` (GroupNorm,
Wu & He 2018; Hsieh et al. 2020 recommend it for non-IID federated training),
``"layer"`` (over H, W and C of each example) or ``"none"``. BatchNorm keeps
``batch_stats``: in training they are updated from the real examples of each
local batch (padding ignored through ``mask``) and returned in
``aux["variables"]`` (``tasks.make_loss_fn``), and the round averages them
across clients like parameters; eval uses the averaged running statistics.
Keeping them local per client is FedBN (``--config.algorithm.name=fedbn``,
which selects the ``BatchNorm_*`` / ``batch_stats`` leaves these modules create).

**3D** (``spatial_dims=3``): every kernel is cubic (3x3x3 convs, a 7x7x7 large
stem, 2x2x2 pooling) for volumes ``[B, D, H, W, C]``; ``ResNet18_3D`` is the
ResNet-18 (3D) baseline of MedMNIST v2 (Yang et al., Scientific Data 2023),
which converts the 2D ResNet-18 of their 28 px experiments (3x3 stride-1
stem, no pooling) to 3D convolutions, as the small stem here does for 28^3 and
64^3 volumes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fedjax_med.models import layers

NORMS = ("batch", "group", "layer", "none")
STEMS = ("auto", "small", "large")


class Norm(nn.Module):
  """BatchNorm / GroupNorm / LayerNorm / identity behind one interface.

  Attributes:
    kind: one of ``NORMS``.
    num_groups: GroupNorm groups (1 when they do not divide the channels).
    zero_init: start the scale at 0 (last norm of a residual branch).
  """

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
      # Over every axis but the batch: (H, W, C) of an image, (D, H, W, C) of a volume.
      axes = tuple(range(1 - x.ndim, 0))
      return nn.LayerNorm(reduction_axes=axes, feature_axes=-1, scale_init=scale_init)(x)
    if self.kind == "none":
      return x
    raise ValueError(f"norm must be one of {NORMS}, got {self.kind!r}")


class _Block(nn.Module):
  """Fields and layer factories shared by the residual blocks."""

  features: int
  strides: int = 1
  norm: str = "group"
  conv_impl: str = "auto"
  num_groups: int = 8
  spatial_dims: int = 2

  def kernel(self, size: int) -> tuple[int, ...]:
    """A cubic (square in 2D) kernel shape of side ``size``."""
    return (size,) * self.spatial_dims

  def layer_factories(self):
    """``(conv, norm)`` partials: bias-free convs in the block's lowering, its norm kind."""
    return (functools.partial(layers.Conv, use_bias=False, impl=self.conv_impl),
            functools.partial(Norm, self.norm, self.num_groups))


class BasicBlock(_Block):
  """Two 3x3 convs; output channels ``features``."""

  @nn.compact
  def __call__(self, x, train: bool, mask):
    conv, norm = self.layer_factories()
    y = conv(self.features, self.kernel(3), self.strides)(x)
    y = nn.relu(norm()(y, train, mask))
    y = conv(self.features, self.kernel(3))(y)
    y = norm(zero_init=True)(y, train, mask)
    if x.shape != y.shape:
      x = conv(self.features, self.kernel(1), self.strides)(x)
      x = norm()(x, train, mask)
    return nn.relu(x + y)


class Bottleneck(_Block):
  """1x1 -> 3x3 (strided) -> 1x1 convs; output channels ``4 * features``."""

  @nn.compact
  def __call__(self, x, train: bool, mask):
    conv, norm = self.layer_factories()
    y = nn.relu(norm()(conv(self.features, self.kernel(1))(x), train, mask))
    y = nn.relu(norm()(conv(self.features, self.kernel(3), self.strides)(y), train, mask))
    y = norm(zero_init=True)(conv(4 * self.features, self.kernel(1))(y), train, mask)
    if x.shape != y.shape:
      x = conv(4 * self.features, self.kernel(1), self.strides)(x)
      x = norm()(x, train, mask)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """ResNet with ``len(stage_sizes)`` stages of ``block``.

  Attributes:
    num_classes: output logits.
    stage_sizes: blocks per stage; stage i has ``width * 2**i`` channels (x4
      for Bottleneck) and, for i > 0, starts with a stride-2 block.
    width: channels of the stem and first stage (the width knob: ResNet-18
      with ``width=32`` is half as wide).
    block: ``BasicBlock`` or ``Bottleneck``.
    norm: one of ``NORMS``.
    num_groups: GroupNorm groups.
    stem: ``"auto"`` (by input size, see module docstring), ``"small"``
      (3x3/1, no pool) or ``"large"`` (7x7/2 + 2x2 max-pool).
    spatial_dims: 2 (images ``[B, H, W, C]``) or 3 (volumes ``[B, D, H, W, C]``,
      cubic kernels).
    conv_impl: lowering of convolutions and pooling (``layers.IMPLS``).
  """

  num_classes: int
  stage_sizes: Sequence[int] = (1, 1, 1)
  width: int = 16
  block: type[nn.Module] = BasicBlock
  norm: str = "group"
  num_groups: int = 8
  stem: str = "auto"
  spatial_dims: int = 2
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
    """[B, H, W, C] (3D: [B, D, H, W, C]) -> logits [B, num_classes].

    ``mask`` [B] is used by BatchNorm only.
    """
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    if self.stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
    dims = self.spatial_dims
    layers.check_spatial_dims(x, dims)
    large = self.stem == "large" or (
        self.stem == "auto" and min(x.shape[1 : 1 + dims]) >= layers.LARGE_INPUT
    )
    conv = functools.partial(layers.Conv, use_bias=False, impl=self.conv_impl)
    x = conv(self.width, (7,) * dims, 2)(x) if large else conv(self.width, (3,) * dims)(x)
    x = nn.relu(Norm(self.norm, self.num_groups)(x, train, mask))
    if large:
      x = layers.max_pool(x, 2, impl=self.conv_impl)
    for i, n in enumerate(self.stage_sizes):
      for j in range(n):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block(
            self.width * 2**i, strides, self.norm, self.conv_impl, self.num_groups, dims
        )(x, train, mask)
    x = jnp.mean(x, axis=tuple(range(1, 1 + dims)))
    return nn.Dense(self.num_classes)(x)


ResNet8 = functools.partial(ResNet, stage_sizes=(1, 1, 1), width=16)
ResNet14 = functools.partial(ResNet, stage_sizes=(2, 2, 2), width=16)
ResNet20 = functools.partial(ResNet, stage_sizes=(3, 3, 3), width=16)
# 32 groups as in Wu & He (2018) for the 64-2048 channel nets.
ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), width=64, num_groups=32)
ResNet50 = functools.partial(
    ResNet, stage_sizes=(3, 4, 6, 3), width=64, block=Bottleneck, num_groups=32
)
_ResNet1 = functools.partial(ResNet, stage_sizes=(1,), width=4)
ResNet18_3D = functools.partial(
    ResNet, stage_sizes=(2, 2, 2, 2), width=64, num_groups=32, spatial_dims=3
)
_ResNet3D1 = functools.partial(ResNet, stage_sizes=(1,), width=4, spatial_dims=3)
