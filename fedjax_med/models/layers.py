"""Convolution and pooling with a backend-dependent lowering.

On XLA:CPU two native ops are slow in federated rounds (measured, see
STYLE.md §11): ``lax.conv_general_dilated`` under ``vmap`` with per-client
kernels lowers to a grouped convolution (5-50x slower), and the gradient of
``reduce_window`` max-pooling (``select_and_scatter``) dominates a step. The
``"im2col"`` path builds patches from static slices and does one matmul, which
vmaps into a batched matmul; pooling by reshape + max has a cheap gradient.
Both are numerically equal to the native ops (tested on values and gradients).
Depthwise convolutions (``feature_group_count`` = input channels, ConvNeXt)
take a third form on the im2col path: a multiply-accumulate of the kh*kw
static slices with per-channel kernel taps, which vmaps into elementwise ops.

``impl`` is one switch for a whole model: ``"native"``, ``"im2col"`` or
``"auto"`` (im2col on CPU, native elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ("auto", "native", "im2col")
# Inputs with min(H, W) >= LARGE_INPUT (MedMNIST+ 128 and 224 px) get the
# ImageNet-style stride-4 stems; smaller ones (28, 64 px) keep full resolution
# in the stem (CIFAR-style). Models decide at call time from the input shape.
LARGE_INPUT = 128


def resolve_impl(impl: str) -> str:
  """Maps ``"auto"`` to the fastest lowering for the default backend."""
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
  if impl == "auto":
    return "im2col" if jax.default_backend() == "cpu" else "native"
  return impl


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def _pad_and_slices(x, kh, kw, strides, padding) -> list[jax.Array]:
  """The kh*kw shifted (strided) views of the padded input, in (i, j) order."""
  sh, sw = strides
  h, w = x.shape[1], x.shape[2]
  if padding == "SAME":
    pads = (_same_padding(h, kh, sh), _same_padding(w, kw, sw))
  elif padding == "VALID":
    pads = ((0, 0), (0, 0))
  else:
    pads = tuple(tuple(p) for p in padding)
  x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  hp, wp = x.shape[1], x.shape[2]
  ho, wo = (hp - kh) // sh + 1, (wp - kw) // sw + 1
  return [
      x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
      for i in range(kh)
      for j in range(kw)
  ]


def im2col_conv(
    x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding, feature_group_count: int = 1
) -> jax.Array:
  """``conv_general_dilated`` (NHWC, HWIO) as static slices + one matmul (or per-channel MACs).

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin // feature_group_count, Cout].
    strides: (sh, sw).
    padding: ``"SAME"``, ``"VALID"`` or ((top, bottom), (left, right)).
    feature_group_count: G as in ``lax.conv_general_dilated``: input and
      output channels split into G groups convolved separately. ``G = Cin``
      (depthwise) is a per-channel multiply-accumulate over the slices;
      other ``G > 1`` are one grouped ``einsum``.

  Returns:
    [N, H', W', Cout].
  """
  kh, kw, cin_g, cout = kernel.shape
  groups = feature_group_count
  if groups == 1:
    cols = _pad_and_slices(x, kh, kw, strides, padding)
    patches = jnp.concatenate(cols, axis=-1)  # [N, ho, wo, kh*kw*cin], (i, j, c) order
    return patches @ kernel.reshape(kh * kw * cin_g, cout)
  if x.shape[-1] != groups * cin_g or cout % groups:
    raise ValueError(f"cannot split {x.shape[-1]} -> {cout} channels into {groups} groups")
  if cin_g == 1:
    # Depthwise (channel multiplier m = Cout / Cin): output channel c*m + k reads
    # input channel c, so repeating each input channel m times makes it 1:1.
    x = jnp.repeat(x, cout // groups, axis=-1) if cout != groups else x
    taps = kernel.reshape(kh * kw, cout)
    y = None
    for t, col in enumerate(_pad_and_slices(x, kh, kw, strides, padding)):
      y = col * taps[t] if y is None else y + col * taps[t]
    return y
  cols = jnp.stack(_pad_and_slices(x, kh, kw, strides, padding), axis=-2)  # [N, ho, wo, K, Cin]
  cols = cols.reshape(*cols.shape[:-1], groups, cin_g)
  k = kernel.reshape(kh * kw, cin_g, groups, cout // groups)  # out channel = g * (Cout/G) + o
  y = jnp.einsum("nhwkgc,kcgo->nhwgo", cols, k)
  return y.reshape(*y.shape[:3], cout)


class Conv(nn.Module):
  """2D convolution (NHWC) with the same parameters as ``flax.linen.Conv``.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw) or int.
    padding: ``"SAME"`` or ``"VALID"``.
    use_bias: add a bias.
    feature_group_count: channel groups; ``features`` (= input channels) for
      a depthwise convolution.
    impl: ``"auto"``, ``"native"`` or ``"im2col"``.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: str = "SAME"
  use_bias: bool = True
  feature_group_count: int = 1
  impl: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    strides = (self.strides, self.strides) if isinstance(self.strides, int) else tuple(self.strides)
    kh, kw = self.kernel_size
    groups = self.feature_group_count
    if x.shape[-1] % groups or self.features % groups:
      raise ValueError(
          f"feature_group_count={groups} must divide input ({x.shape[-1]}) and output "
          f"({self.features}) channels"
      )
    shape = (kh, kw, x.shape[-1] // groups, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, jnp.float32).astype(x.dtype)
    if resolve_impl(self.impl) == "im2col":
      y = im2col_conv(x, kernel, strides, self.padding, groups)
    else:
      y = jax.lax.conv_general_dilated(
          x,
          kernel,
          strides,
          self.padding,
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=groups,
      )
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(y.dtype)
    return y


def _pool_reshape(x: jax.Array, window: int, reduce) -> jax.Array:
  n, h, w, c = x.shape
  ho, wo = h // window, w // window
  x = x[:, : ho * window, : wo * window, :]  # VALID pooling drops the remainder
  return reduce(x.reshape(n, ho, window, wo, window, c), axis=(2, 4))


def max_pool(x: jax.Array, window: int = 2, impl: str = "auto") -> jax.Array:
  """Non-overlapping ``window x window`` max-pooling, stride = window, VALID."""
  if resolve_impl(impl) == "native":
    return nn.max_pool(x, (window, window), (window, window), "VALID")
  return _pool_reshape(x, window, jnp.max)


def avg_pool(x: jax.Array, window: int = 2, impl: str = "auto") -> jax.Array:
  """Non-overlapping ``window x window`` average-pooling, stride = window, VALID."""
  if resolve_impl(impl) == "native":
    return nn.avg_pool(x, (window, window), (window, window), "VALID")
  return _pool_reshape(x, window, jnp.mean)
