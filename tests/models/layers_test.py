"""The im2col conv (dense, grouped, depthwise) and reshape pooling equal the native ops.

Values and gradients, in 2D (NHWC) and 3D (NDHWC); each case is one jitted call (eager
op-by-op dispatch is slower).
"""

import chex
import jax
import jax.numpy as jnp
import pytest

from fedjax_med.models import layers


def native_conv(x, k, strides, padding):
  return jax.lax.conv_general_dilated(x, k, strides, padding,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize(
    "hw,ksize,strides,padding",
    [
        ((28, 28), (3, 3), (1, 1), "SAME"),
        ((7, 7), (3, 3), (2, 2), "SAME"),
        ((8, 6), (3, 3), (2, 2), "SAME"),
        ((8, 6), (1, 1), (2, 2), "SAME"),
        ((7, 7), (5, 3), (1, 1), "VALID"),
        ((8, 8), (3, 3), (2, 2), "VALID"),
    ],
)
def test_im2col_conv_equals_native_values_and_grads(hw, ksize, strides, padding):
  kx, kk = jax.random.split(jax.random.PRNGKey(0))
  x = jax.random.normal(kx, (2, *hw, 3))
  k = jax.random.normal(kk, (*ksize, 3, 4))
  assert_same_values_and_grads(layers.im2col_conv, native_conv, x, k, strides, padding)


def assert_same_values_and_grads(conv, ref, x, k, *args):
  """One jitted call: both outputs and both (d/dx, d/dk) of a non-linear loss."""

  @jax.jit
  def both(x, k):
    outs = []
    for f in (conv, ref):
      loss = lambda x, k, f=f: jnp.sum(jnp.sin(f(x, k, *args)))  # noqa: E731
      outs.append((f(x, k, *args), jax.grad(loss, (0, 1))(x, k)))
    return outs

  (y, g), (y_ref, g_ref) = both(x, k)
  chex.assert_trees_all_close(y, y_ref, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(g, g_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "hw,ksize,strides,padding,cin,cout,groups",
    [
        ((14, 14), (7, 7), (1, 1), "SAME", 5, 5, 5),  # ConvNeXt depthwise
        ((7, 9), (3, 3), (2, 2), "SAME", 4, 4, 4),  # strided, odd sizes
        ((8, 8), (3, 3), (1, 1), "VALID", 3, 6, 3),  # depthwise, channel multiplier 2
        ((8, 8), (3, 3), (1, 1), "SAME", 6, 4, 2),  # general groups: the einsum path
    ],
)
def test_grouped_and_depthwise_im2col_equals_native(hw, ksize, strides, padding, cin, cout, groups):
  kx, kk = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(kx, (2, *hw, cin))
  k = jax.random.normal(kk, (*ksize, cin // groups, cout))

  def ref(x, k, strides, padding, groups):
    return jax.lax.conv_general_dilated(x, k, strides, padding, feature_group_count=groups,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  assert_same_values_and_grads(layers.im2col_conv, ref, x, k, strides, padding, groups)


def test_depthwise_conv_module_under_vmap_is_elementwise():
  """Per-client depthwise kernels under vmap: same values as native, and no conv op in the HLO."""
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 9, 9, 4))
  conv = {impl: layers.Conv(4, (7, 7), feature_group_count=4, impl=impl)
          for impl in ("im2col", "native")}
  kernel = jax.random.normal(jax.random.PRNGKey(2), (3, 7, 7, 1, 4))  # [clients, kh, kw, 1, C]
  v = {"params": {"kernel": kernel, "bias": jnp.zeros((3, 4))}}
  apply = {i: jax.jit(jax.vmap(c.apply)) for i, c in conv.items()}
  chex.assert_trees_all_close(apply["im2col"](v, x), apply["native"](v, x), rtol=1e-5, atol=1e-5)
  assert "convolution" not in apply["im2col"].lower(v, x).as_text()


def test_im2col_conv_under_vmap_with_per_client_kernels():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 9, 9, 2))
  k = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 3, 2, 5))
  f = lambda conv: jax.jit(jax.vmap(lambda x, k: conv(x, k, (1, 1), "SAME")))  # noqa: E731
  chex.assert_trees_all_close(f(layers.im2col_conv)(x, k), f(native_conv)(x, k), rtol=1e-5,
                              atol=1e-5)


@pytest.mark.parametrize("pool", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9), (4, 6, 8), (5, 7, 9)])  # images and volumes
def test_reshape_pooling_equals_native(pool, hw):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *hw, 3))
  ours = lambda x: getattr(layers, pool)(x, 2, impl="im2col")  # noqa: E731
  ref = lambda x: getattr(layers, pool)(x, 2, impl="native")  # noqa: E731

  @jax.jit
  def values_and_grads(x):
    return [(f(x), jax.grad(lambda x, f=f: jnp.sum(jnp.cos(f(x))))(x)) for f in (ours, ref)]

  (y, g), (y_ref, g_ref) = values_and_grads(x)
  assert y.shape == (2, *(n // 2 for n in hw), 3)
  chex.assert_trees_all_close(y, y_ref, rtol=1e-6)
  chex.assert_trees_all_close(g, g_ref, rtol=1e-5, atol=1e-6)


def test_conv_module_impls_share_parameters_and_outputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 10, 3))
  fast = layers.Conv(6, (3, 3), strides=2, impl="im2col")
  slow = layers.Conv(6, (3, 3), strides=2, impl="native")
  v = jax.jit(fast.init)(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(
      jnp.shape, jax.eval_shape(slow.init, jax.random.PRNGKey(1), x))
  outs = jax.jit(lambda v, x: (fast.apply(v, x), slow.apply(v, x)))(v, x)
  chex.assert_trees_all_close(*outs, rtol=1e-5, atol=1e-5)


def test_resolve_impl():
  assert layers.resolve_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "native")
  with pytest.raises(ValueError, match="impl"):
    layers.resolve_impl("winograd")
  for dims in (2, 3):
    for op in ("conv", "pool"):
      want = layers.AUTO_CPU[(dims, op)] if jax.default_backend() == "cpu" else "native"
      assert layers.resolve_impl("auto", dims, op) == want
      assert layers.resolve_impl("native", dims, op) == "native"


def native_conv3d(x, k, strides, padding, groups=1):
  return jax.lax.conv_general_dilated(x, k, strides, padding, feature_group_count=groups,
                                      dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


@pytest.mark.parametrize(
    "dhw,ksize,strides,padding",
    [
        ((8, 8, 8), (3, 3, 3), (1, 1, 1), "SAME"),
        ((7, 7, 7), (3, 3, 3), (2, 2, 2), "SAME"),  # odd side, stride 2: cnn3d's layers
        ((6, 8, 5), (3, 3, 3), (2, 1, 2), "SAME"),
        ((8, 6, 6), (1, 1, 1), (2, 2, 2), "SAME"),  # ResNet's strided 1x1x1 shortcut
        ((7, 6, 8), (3, 2, 3), (1, 1, 1), "VALID"),
        ((6, 6, 6), (3, 3, 3), (2, 2, 2), ((1, 0), (0, 1), (2, 1))),
    ],
)
def test_im2col_conv3d_equals_native_values_and_grads(dhw, ksize, strides, padding):
  kx, kk = jax.random.split(jax.random.PRNGKey(4))
  x = jax.random.normal(kx, (2, *dhw, 3))
  k = jax.random.normal(kk, (*ksize, 3, 4))
  assert_same_values_and_grads(layers.im2col_conv, native_conv3d, x, k, strides, padding)


@pytest.mark.parametrize("cin,cout,groups", [(4, 4, 4), (3, 6, 3), (6, 4, 2)])
def test_grouped_and_depthwise_im2col_conv3d_equals_native(cin, cout, groups):
  kx, kk = jax.random.split(jax.random.PRNGKey(5))
  x = jax.random.normal(kx, (2, 5, 6, 7, cin))
  k = jax.random.normal(kk, (3, 3, 3, cin // groups, cout))
  assert_same_values_and_grads(layers.im2col_conv, native_conv3d, x, k, (1, 2, 1), "SAME", groups)


def test_conv3d_module_under_vmap_with_per_client_kernels_has_no_conv_op():
  """Per-client 3x3x3 kernels under vmap: native values, and batched matmuls instead of a
  grouped convolution in the im2col HLO."""
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 6, 6, 6, 2))  # [clients, B, D, H, W, C]
  conv = {impl: layers.Conv(5, (3, 3, 3), strides=2, impl=impl) for impl in ("im2col", "native")}
  v = {"params": {"kernel": jax.random.normal(jax.random.PRNGKey(2), (3, 3, 3, 3, 2, 5)),
                  "bias": jax.random.normal(jax.random.PRNGKey(3), (3, 5))}}
  apply = {i: jax.jit(jax.vmap(c.apply)) for i, c in conv.items()}
  y = apply["im2col"](v, x)
  assert y.shape == (3, 2, 3, 3, 3, 5)
  chex.assert_trees_all_close(y, apply["native"](v, x), rtol=1e-5, atol=1e-5)
  assert "convolution" not in apply["im2col"].lower(v, x).as_text()


def test_conv3d_module_impls_share_parameters_and_outputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 7, 5, 3))
  fast = layers.Conv(4, (3, 3, 3), strides=2, impl="im2col")
  slow = layers.Conv(4, (3, 3, 3), strides=2, impl="native")
  v = jax.jit(fast.init)(jax.random.PRNGKey(1), x)
  assert v["params"]["kernel"].shape == (3, 3, 3, 3, 4)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(
      jnp.shape, jax.eval_shape(slow.init, jax.random.PRNGKey(1), x))
  outs = jax.jit(lambda v, x: (fast.apply(v, x), slow.apply(v, x)))(v, x)
  chex.assert_trees_all_close(*outs, rtol=1e-5, atol=1e-5)


def test_conv_rejects_an_input_of_the_wrong_rank():
  x = jnp.zeros((2, 8, 8, 1))
  with pytest.raises(ValueError, match="kernel_size"):
    layers.Conv(4, (3, 3, 3)).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="volumes"):
    layers.check_spatial_dims(x, 3)
