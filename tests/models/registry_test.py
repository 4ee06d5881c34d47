"""Every registered model builds, runs, and trains through the round API."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_med import errors, models, tasks


@pytest.mark.parametrize("name", [n for n in models.names() if "tiny" in n])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_forward_shapes_and_finite(name, shape):
  model = models.get_model(name, 5)
  v = tasks.init_variables(model, jax.random.PRNGKey(0), shape)
  logits = tasks.make_predict_fn(model)(v, jnp.zeros((3, *shape), jnp.uint8))
  assert logits.shape == (3, 5) and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name", ["cnn", "resnet8_gn", "resnet8_bn", "resnet8_ln"])
def test_full_models_init(name):
  model = models.get_model(name, 2)
  v = tasks.init_variables(model, jax.random.PRNGKey(0), (28, 28, 1))
  assert ("batch_stats" in v) == name.endswith("_bn")
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v))


def test_native_and_im2col_models_agree():
  x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 28, 28, 1)), jnp.uint8)
  fast = models.get_model("resnet_tiny_gn", 3, conv_impl="im2col")
  slow = models.get_model("resnet_tiny_gn", 3, conv_impl="native")
  v = tasks.init_variables(fast, jax.random.PRNGKey(0), (28, 28, 1))
  chex.assert_trees_all_close(tasks.make_predict_fn(fast)(v, x), tasks.make_predict_fn(slow)(v, x),
                              rtol=1e-4, atol=1e-5)


def test_batchnorm_statistics_ignore_padding_examples():
  model = models.get_model("resnet_tiny_bn", 2)
  v = tasks.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
  loss_fn = tasks.make_loss_fn(model)
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
