"""A small CNN for 28 px inputs (conv-pool-conv-pool-dense), the quickstart model."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax

from fedjax_med.models import layers


class CNN(nn.Module):
  """``[conv3x3 -> relu -> maxpool2] x len(features)`` then two dense layers.

  Attributes:
    num_classes: output logits.
    features: channels of each conv block.
    hidden: width of the hidden dense layer.
    conv_impl: lowering of conv and pooling (``layers.IMPLS``).
  """

  num_classes: int
  features: Sequence[int] = (32, 64)
  hidden: int = 128
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None) -> jax.Array:
    del train, mask  # no batch-dependent layers
    for f in self.features:
      x = layers.Conv(f, (3, 3), impl=self.conv_impl)(x)
      x = layers.max_pool(nn.relu(x), 2, impl=self.conv_impl)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(nn.Dense(self.hidden)(x))
    return nn.Dense(self.num_classes)(x)


SmallCNN = functools.partial(CNN, features=(32, 64), hidden=128)
_TinyCNN = functools.partial(CNN, features=(4,), hidden=8)
