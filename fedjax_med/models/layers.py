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
``"auto"``: per (spatial dims, op) on CPU from ``AUTO_CPU``, native elsewhere.

**3D** (``[N, D, H, W, C]`` with a 3-long ``kernel_size``, ``DHWIO`` kernels):
the same two lowerings, 27 static slices for a 3x3x3 kernel, and 2x2x2
pooling by reshape. ``AUTO_CPU`` resolves 3D like 2D, im2col for both, by
measurement (XLA:CPU, jax 0.10.2, 2 shared cores; CPU seconds of the one-jit
FedAvg round of ``cnn3d`` on 28^3, S=5, B=32, chunks of 1 client, the other
lowering otherwise equal): K=4 1.0 (im2col) vs 12.1 (native conv), K=8 2.1 vs
24.2, K=16 4.2 vs 48.3, 11-12x. Native 3D conv is slow on XLA:CPU even
unbatched (28^3, 1->8 channels, batch 32: 0.38 s forward vs 0.14 s). For 3D
pooling, a conv-pool 3D CNN (8-16-32 channels, K=4, S=2) took 3.3 s with the
reshape pool vs 3.8 s with ``reduce_window`` (its gradient alone: 37 vs 158
ms at 28^3 x 8 channels, batch 32). On a GPU "auto" stays native (cuDNN);
measure there before changing it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ("auto", "native", "im2col")
# Inputs with min(H, W) >= LARGE_INPUT (MedMNIST+ 128 and 224 px) get the
# ImageNet-style stride-4 stems; smaller ones (28, 64 px) keep full resolution
# in the stem (CIFAR-style). Models decide at call time from the input shape.
LARGE_INPUT = 128


_DIMENSION_NUMBERS = {2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
# What "auto" resolves to on XLA:CPU, per (spatial dims, op); other backends get "native".
# Measured per entry (module docstring): 3D agrees with 2D, but keeps its own rows so
# a backend or jax version where they part can change one without the other.
AUTO_CPU = {
    (2, "conv"): "im2col",
    (2, "pool"): "im2col",
    (3, "conv"): "im2col",
    (3, "pool"): "im2col",
}


def resolve_impl(impl: str, dims: int = 2, op: str = "conv") -> str:
  """Maps ``"auto"`` to the fastest lowering for the default backend, spatial dims and op.

  Args:
    impl: one of ``IMPLS``.
    dims: spatial dimensions of the input, 2 (images) or 3 (volumes).
    op: ``"conv"`` or ``"pool"``.

  Returns:
    ``"native"`` or ``"im2col"``.
  """
  if impl not in IMPLS:
    raise ValueError(f"conv impl must be one of {IMPLS}, got {impl!r}")
  if impl == "auto":
    return AUTO_CPU[(dims, op)] if jax.default_backend() == "cpu" else "native"
  return impl


def check_spatial_dims(x: jax.Array, dims: int) -> None:
  """Raises ``ValueError`` unless ``x`` is ``[B, *spatial, C]`` with ``dims`` spatial axes."""
  if x.ndim != dims + 2:
    kind = {2: "images [B, H, W, C]", 3: "volumes [B, D, H, W, C]"}.get(dims, f"{dims}D inputs")
    raise ValueError(f"this model takes {kind}; got an input of shape {tuple(x.shape)} "
                     "(models.registry.check_input names a model for it)")


def _same_padding(size: int, k: int, stride: int) -> tuple[int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


def _pad_and_slices(x, ksize, strides, padding) -> list[jax.Array]:
  """The prod(ksize) shifted (strided) views of the padded input, in row-major tap order.

  Args:
    x: [N, *spatial, C] with ``len(spatial) == len(ksize)`` (2 or 3).
    ksize: the kernel's spatial shape, e.g. (kh, kw) or (kd, kh, kw).
    strides: one stride per spatial axis.
    padding: ``"SAME"``, ``"VALID"`` or one (low, high) pair per spatial axis.
  """
  spatial = x.shape[1:-1]
  if padding == "SAME":
    pads = tuple(_same_padding(n, k, s) for n, k, s in zip(spatial, ksize, strides, strict=True))
  elif padding == "VALID":
    pads = ((0, 0),) * len(ksize)
  else:
    pads = tuple(tuple(p) for p in padding)
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  outs = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], ksize, strides, strict=True)]
  return [
      x[(slice(None),
         *(slice(i, i + (o - 1) * s + 1, s) for i, o, s in zip(tap, outs, strides, strict=True)),
         slice(None))]
      for tap in itertools.product(*(range(k) for k in ksize))
  ]


def im2col_conv(
    x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding, feature_group_count: int = 1
) -> jax.Array:
  """``conv_general_dilated`` (NHWC, HWIO; or NDHWC, DHWIO) as static slices + one matmul.

  Args:
    x: [N, H, W, Cin] (2D) or [N, D, H, W, Cin] (3D).
    kernel: [kh, kw, Cin // feature_group_count, Cout] (3D: [kd, kh, kw, ...]).
    strides: one stride per spatial axis, e.g. (sh, sw).
    padding: ``"SAME"``, ``"VALID"`` or one (low, high) pair per spatial axis.
    feature_group_count: G as in ``lax.conv_general_dilated``: input and
      output channels split into G groups convolved separately. ``G = Cin``
      (depthwise) is a per-channel multiply-accumulate over the slices;
      other ``G > 1`` are one grouped ``einsum``.

  Returns:
    [N, H', W', Cout] (3D: [N, D', H', W', Cout]).
  """
  *ksize, cin_g, cout = kernel.shape
  taps = math.prod(ksize)
  groups = feature_group_count
  if groups == 1:
    cols = _pad_and_slices(x, ksize, strides, padding)
    patches = jnp.concatenate(cols, axis=-1)  # [N, *out, taps*cin], (tap, c) order
    return patches @ kernel.reshape(taps * cin_g, cout)
  if x.shape[-1] != groups * cin_g or cout % groups:
    raise ValueError(f"cannot split {x.shape[-1]} -> {cout} channels into {groups} groups")
  if cin_g == 1:
    # Depthwise (channel multiplier m = Cout / Cin): output channel c*m + k reads
    # input channel c, so repeating each input channel m times makes it 1:1.
    x = jnp.repeat(x, cout // groups, axis=-1) if cout != groups else x
    tap_kernels = kernel.reshape(taps, cout)
    y = None
    for t, col in enumerate(_pad_and_slices(x, ksize, strides, padding)):
      y = col * tap_kernels[t] if y is None else y + col * tap_kernels[t]
    return y
  cols = jnp.stack(_pad_and_slices(x, ksize, strides, padding), axis=-2)  # [N, *out, taps, Cin]
  cols = cols.reshape(*cols.shape[:-1], groups, cin_g)
  k = kernel.reshape(taps, cin_g, groups, cout // groups)  # out channel = g * (Cout/G) + o
  y = jnp.einsum("n...kgc,kcgo->n...go", cols, k)
  return y.reshape(*y.shape[:-2], cout)


class Conv(nn.Module):
  """2D (NHWC) or 3D (NDHWC) convolution with the same parameters as ``flax.linen.Conv``.

  The length of ``kernel_size`` sets the spatial dimensions, as in flax.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw), or (kd, kh, kw) for volumes [N, D, H, W, C].
    strides: one per spatial axis, or an int for all.
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
    dims = len(self.kernel_size)
    if dims not in _DIMENSION_NUMBERS or x.ndim != dims + 2:
      raise ValueError(
          f"kernel_size {tuple(self.kernel_size)} needs a [N, {dims} spatial axes, C] input "
          f"(2 or 3 spatial axes), got shape {x.shape}"
      )
    strides = (self.strides,) * dims if isinstance(self.strides, int) else tuple(self.strides)
    groups = self.feature_group_count
    if x.shape[-1] % groups or self.features % groups:
      raise ValueError(
          f"feature_group_count={groups} must divide input ({x.shape[-1]}) and output "
          f"({self.features}) channels"
      )
    shape = (*self.kernel_size, x.shape[-1] // groups, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, jnp.float32).astype(x.dtype)
    if resolve_impl(self.impl, dims) == "im2col":
      y = im2col_conv(x, kernel, strides, self.padding, groups)
    else:
      y = jax.lax.conv_general_dilated(
          x,
          kernel,
          strides,
          self.padding,
          dimension_numbers=_DIMENSION_NUMBERS[dims],
          feature_group_count=groups,
      )
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(y.dtype)
    return y


def _pool_reshape(x: jax.Array, window: int, reduce) -> jax.Array:
  n, *spatial, c = x.shape
  out = [size // window for size in spatial]
  x = x[(slice(None), *(slice(o * window) for o in out), slice(None))]  # VALID drops the rest
  x = x.reshape(n, *(d for o in out for d in (o, window)), c)  # [N, o1, w, o2, w, ..., C]
  return reduce(x, axis=tuple(range(2, 2 * len(out) + 1, 2)))


def max_pool(x: jax.Array, window: int = 2, impl: str = "auto") -> jax.Array:
  """Non-overlapping max-pooling over every spatial axis of x [N, *spatial, C] (2 or 3 axes).

  The window is ``window`` along each axis, stride = window, VALID.
  """
  dims = x.ndim - 2
  if resolve_impl(impl, dims, "pool") == "native":
    return nn.max_pool(x, (window,) * dims, (window,) * dims, "VALID")
  return _pool_reshape(x, window, jnp.max)


def avg_pool(x: jax.Array, window: int = 2, impl: str = "auto") -> jax.Array:
  """Non-overlapping average-pooling over every spatial axis (as :func:`max_pool`)."""
  dims = x.ndim - 2
  if resolve_impl(impl, dims, "pool") == "native":
    return nn.avg_pool(x, (window,) * dims, (window,) * dims, "VALID")
  return _pool_reshape(x, window, jnp.mean)
