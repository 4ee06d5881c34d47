"""Convolution and pooling with a backend-dependent lowering.

On XLA:CPU two native ops are slow in federated rounds (measured, see
STYLE.md §11): ``lax.conv_general_dilated`` under ``vmap`` with per-client
kernels lowers to a grouped convolution (5-50x slower), and the gradient of
``reduce_window`` max-pooling (``select_and_scatter``) dominates a step. The
``"im2col"`` path builds patches from static slices and does one matmul, which
vmaps into a batched matmul; pooling by reshape + max has a cheap gradient.
Both are numerically equal to the native ops (tested on values and gradients).

``impl`` is one switch for a whole model: ``"native"``, ``"im2col"`` or
``"auto"`` (im2col on CPU, native elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ("auto", "native", "im2col")


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


def im2col_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding) -> jax.Array:
  """``conv_general_dilated`` (NHWC, HWIO) as static slices + one matmul.

  Args:
    x: [N, H, W, Cin].
    kernel: [kh, kw, Cin, Cout].
    strides: (sh, sw).
    padding: ``"SAME"``, ``"VALID"`` or ((top, bottom), (left, right)).

  Returns:
    [N, H', W', Cout].
  """
  kh, kw, cin, cout = kernel.shape
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
  if kh == kw == 1:
    patches = x[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, :]
  else:
    cols = [
        x[:, i : i + (ho - 1) * sh + 1 : sh, j : j + (wo - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(cols, axis=-1)  # [N, ho, wo, kh*kw*cin], (i, j, c) order
  return patches @ kernel.reshape(kh * kw * cin, cout)


class Conv(nn.Module):
  """2D convolution (NHWC) with the same parameters as ``flax.linen.Conv``.

  Attributes:
    features: output channels.
    kernel_size: (kh, kw).
    strides: (sh, sw) or int.
    padding: ``"SAME"`` or ``"VALID"``.
    use_bias: add a bias.
    impl: ``"auto"``, ``"native"`` or ``"im2col"``.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: int | Sequence[int] = 1
  padding: str = "SAME"
  use_bias: bool = True
  impl: str = "auto"
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    strides = (self.strides, self.strides) if isinstance(self.strides, int) else tuple(self.strides)
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    kernel = kernel.astype(x.dtype)
    if resolve_impl(self.impl) == "im2col":
      y = im2col_conv(x, kernel, strides, self.padding)
    else:
      y = jax.lax.conv_general_dilated(
          x, kernel, strides, self.padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
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
