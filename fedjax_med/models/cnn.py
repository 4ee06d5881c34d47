"""Small CNNs: conv-pool-conv-pool-dense for 28 px images (the quickstart model) and 3D volumes.

``spatial_dims=3`` makes every conv 3x3x3 (and every pooling 2x2x2), for the
MedMNIST 3D volumes ``[B, D, H, W, C]`` (28^3 or 64^3, one channel).

``cnn3d`` is sized for CPU runs: three 3x3x3 convs of stride 2 (28^3 -> 14^3 ->
7^3 -> 4^3, 16-32-64 channels) and no pooling. A stride-1 conv followed by a
2x2x2 max-pool computes the conv at full resolution and throws 7/8 of it away;
at 28^3 that costs 8x the multiply-adds and, worse on a memory-bound CPU, 8x
the im2col patches (a 3x3x3 patch is 27 copies of the input). Measured on 2
CPU cores (jax 0.10.2; one SGD step, batch 32, 28^3, CPU seconds): conv-pool
8-16-32 took 12 ms per volume, the strided 16-32-64 net 2.4 ms. A whole FedAvg
round of ``cnn3d`` at K=16 clients x S=5 steps x B=32 volumes took 2.4 s (wall,
idle machine; 4.1 CPU s), compiled in 4 s (``bench/zoo.py --depth 28 --k 16
--steps 5 --batch 32``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from fedjax_med.models import layers, resnet

DOWNSAMPLES = ("pool", "stride")


class CNN(nn.Module):
  """``[conv3x3 -> relu -> maxpool2] x len(features)`` (or strided convs) then two dense layers.

  Attributes:
    num_classes: output logits.
    features: channels of each conv block.
    hidden: width of the hidden dense layer.
    downsample: ``"pool"`` (conv stride 1, then 2x max-pool) or ``"stride"``
      (conv stride 2, no pooling; SAME padding, so a side n becomes ceil(n/2)).
    spatial_dims: 2 (images ``[B, H, W, C]``) or 3 (volumes ``[B, D, H, W, C]``).
    norm: ``"none"`` (the default: no normalization) or ``"batch"`` / ``"group"`` /
      ``"layer"`` after every conv (``resnet.Norm``; ``--config.model.norm``), e.g. a
      BatchNorm CNN for FedBN that differs from the plain CNN only by its norm layers.
    conv_impl: lowering of conv and pooling (``layers.IMPLS``).
  """

  num_classes: int
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  downsample: str = "pool"
  spatial_dims: int = 2
  norm: str = "none"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    if self.norm not in resnet.NORMS:
      raise ValueError(f"norm must be one of {resnet.NORMS}, got {self.norm!r}")
    if self.downsample not in DOWNSAMPLES:
      raise ValueError(f"downsample must be one of {DOWNSAMPLES}, got {self.downsample!r}")
    layers.check_spatial_dims(x, self.spatial_dims)
    pool = self.downsample == "pool"
    for f in self.features:
      x = layers.Conv(f, (3,) * self.spatial_dims, 1 if pool else 2, impl=self.conv_impl)(x)
      if self.norm != "none":  # (none adds no module: the plain CNN's params tree as before)
        x = resnet.Norm(self.norm)(x, train, mask)
      x = nn.relu(x)
      if pool:
        x = layers.max_pool(x, 2, impl=self.conv_impl)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


SmallCNN = functools.partial(CNN, features=(32, 64), hidden=128)
_TinyCNN = functools.partial(CNN, features=(4,), hidden=8)
CNN3D = functools.partial(CNN, features=(16, 32, 64), hidden=64, downsample="stride",
                          spatial_dims=3)
_TinyCNN3D = functools.partial(CNN, features=(2, 4), hidden=8, downsample="stride", spatial_dims=3)
