"""Registry errors, conv lowerings agreeing on a whole model, BatchNorm padding masks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_med import errors, models, tasks


def test_native_and_im2col_models_agree():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 28, 28, 1)), jnp.uint8)
  fast = models.get_model("resnet_tiny_gn", 3, conv_impl="im2col")
  slow = models.get_model("resnet_tiny_gn", 3, conv_impl="native")

  @jax.jit
  def both(x):
    v = tasks.init_variables(fast, jax.random.PRNGKey(0), (28, 28, 1))
    return [tasks.make_predict_fn(m)(v, x) for m in (fast, slow)]

  chex.assert_trees_all_close(*both(x), rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_ignore_padding_examples():
  model = models.get_model("resnet_tiny_bn", 2)
  v = jax.jit(lambda: tasks.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1)))()
  loss_fn = jax.jit(tasks.make_loss_fn(model))
  rng = np.random.default_rng(0)
  real = rng.integers(0, 255, (4, 8, 8, 1)).astype(np.uint8)
  junk = np.full((4, 8, 8, 1), 255, np.uint8)
  label = np.zeros(8, np.int32)
  padded = {"image": np.concatenate([real, junk]), "label": label,
            "mask": np.arange(8) < 4}
  clean = {"image": np.concatenate([real, real]), "label": label, "mask": np.arange(8) < 4}
  key = jax.random.PRNGKey(0)
  (l1, a1), (l2, a2) = loss_fn(v, padded, key), loss_fn(v, clean, key)
  chex.assert_trees_all_close(l1, l2, rtol=1e-5)
  chex.assert_trees_all_close(a1["variables"], a2["variables"], rtol=1e-5)


def test_unknown_model_is_a_config_error():
  with pytest.raises(errors.ConfigError, match="resnet8_gn"):
    models.get_model("resnet9000", 2)
