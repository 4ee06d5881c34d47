"""The im2col conv and reshape pooling equal the native ops (values and gradients)."""

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
  ours = layers.im2col_conv(x, k, strides, padding)
  ref = native_conv(x, k, strides, padding)
  chex.assert_trees_all_close(ours, ref, rtol=1e-5, atol=1e-5)

  def loss(conv):
    return lambda x, k: jnp.sum(jnp.sin(conv(x, k, strides, padding)))

  chex.assert_trees_all_close(jax.grad(loss(layers.im2col_conv), (0, 1))(x, k),
                              jax.grad(loss(native_conv), (0, 1))(x, k), rtol=1e-4, atol=1e-4)


def test_im2col_conv_under_vmap_with_per_client_kernels():
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 9, 9, 2))
  k = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 3, 2, 5))
  f = lambda conv: jax.vmap(lambda x, k: conv(x, k, (1, 1), "SAME"))  # noqa: E731
  chex.assert_trees_all_close(f(layers.im2col_conv)(x, k), f(native_conv)(x, k), rtol=1e-5,
                              atol=1e-5)


@pytest.mark.parametrize("pool", ["max_pool", "avg_pool"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 9)])
def test_reshape_pooling_equals_native(pool, hw):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, *hw, 3))
  ours = lambda x: getattr(layers, pool)(x, 2, impl="im2col")  # noqa: E731
  ref = lambda x: getattr(layers, pool)(x, 2, impl="native")  # noqa: E731
  chex.assert_trees_all_close(ours(x), ref(x), rtol=1e-6)
  g = lambda f: jax.grad(lambda x: jnp.sum(jnp.cos(f(x))))(x)  # noqa: E731
  chex.assert_trees_all_close(g(ours), g(ref), rtol=1e-5, atol=1e-6)


def test_conv_module_impls_share_parameters_and_outputs():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 10, 3))
  fast = layers.Conv(6, (3, 3), strides=2, impl="im2col")
  slow = layers.Conv(6, (3, 3), strides=2, impl="native")
  v = fast.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(jnp.shape, slow.init(jax.random.PRNGKey(1), x))
  chex.assert_trees_all_close(fast.apply(v, x), slow.apply(v, x), rtol=1e-5, atol=1e-5)


def test_resolve_impl():
  assert layers.resolve_impl("auto") == ("im2col" if jax.default_backend() == "cpu" else "native")
  with pytest.raises(ValueError, match="impl"):
    layers.resolve_impl("winograd")
