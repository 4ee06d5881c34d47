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


@pytest.mark.parametrize("name", ["cnn3d_tiny", "resnet3d_tiny_bn"])
def test_native_and_im2col_3d_models_agree(name):
  name, norm = ("resnet3d_tiny", "batch") if name == "resnet3d_tiny_bn" else (name, "")
  x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (2, 7, 8, 6, 1)), jnp.uint8)
  fast = models.get_model(name, 3, conv_impl="im2col", norm=norm)
  slow = models.get_model(name, 3, conv_impl="native", norm=norm)

  @jax.jit
  def both(x):
    v = tasks.init_variables(fast, jax.random.PRNGKey(0), (7, 8, 6, 1))
    batch = {"image": x, "label": jnp.array([0, 2]), "mask": jnp.array([True, True])}
    return [(tasks.make_predict_fn(m)(v, x), jax.grad(lambda v, m=m: tasks.make_loss_fn(m)(
        v, batch, jax.random.PRNGKey(1))[0])(v)) for m in (fast, slow)]

  chex.assert_trees_all_close(*both(x), rtol=1e-4, atol=1e-5)


def test_3d_batchnorm_statistics_ignore_padding_examples():
  model = models.get_model("resnet3d_tiny", 2, norm="batch")
  v = jax.jit(lambda: tasks.init_variables(model, jax.random.PRNGKey(0), (4, 4, 4, 1)))()
  loss_fn = jax.jit(tasks.make_loss_fn(model))
  rng = np.random.default_rng(0)
  real = rng.integers(0, 255, (3, 4, 4, 4, 1)).astype(np.uint8)
  junk = np.full((3, 4, 4, 4, 1), 255, np.uint8)
  label = np.zeros(6, np.int32)
  mask = np.arange(6) < 3
  padded = {"image": np.concatenate([real, junk]), "label": label, "mask": mask}
  clean = {"image": np.concatenate([real, real]), "label": label, "mask": mask}
  key = jax.random.PRNGKey(0)
  (l1, a1), (l2, a2) = loss_fn(v, padded, key), loss_fn(v, clean, key)
  chex.assert_trees_all_close(l1, l2, rtol=1e-5)
  chex.assert_trees_all_close(a1["variables"], a2["variables"], rtol=1e-5)
  # ... while the junk would move them: the mask is what keeps them out.
  (_, a3) = loss_fn(v, {**padded, "mask": np.ones(6, bool)}, key)
  assert not np.allclose(jax.tree.leaves(a1["variables"])[0], jax.tree.leaves(a3["variables"])[0])


@pytest.mark.parametrize("name,shape,match", [
    ("cnn", (28, 28, 28, 1),
     r"model.name='cnn' is 2D but the data are 3D volumes \[28, 28, 28, 1\]; "
     r"choose a 3D model: cnn3d, resnet18_3d$"),
    ("resnet18", (64, 64, 64, 1), r"choose a 3D model: cnn3d, resnet18_3d"),
    ("resnet18_3d", (28, 28, 1),
     r"model.name='resnet18_3d' is 3D but the data are 2D images \[28, 28, 1\]; "
     r"choose a 2D model: cnn, .*resnet18, .*vit_ti"),
    ("cnn3d", (28, 28), r"neither 2D images \[H, W, C\] nor 3D volumes \[D, H, W, C\]"),
    ("cnn9000", (28, 28, 1), r"unknown model.name 'cnn9000'"),
])
def test_check_input_names_the_fix(name, shape, match):
  with pytest.raises(errors.ConfigError, match=match):
    models.check_input(name, shape)


def test_check_input_accepts_matching_shapes_and_suggests_no_test_models():
  for name in models.names():
    dims = models.spatial_dims(name)
    models.check_input(name, (28,) * dims + (1,))
    models.check_input(name, np.array((64,) * dims + (3,)))
  with pytest.raises(errors.ConfigError) as e:
    models.check_input("cnn3d", (28, 28, 1))
  offered = str(e.value).rsplit(": ", 1)[1].split(", ")
  assert set(offered) <= set(models.names(spatial_dims=2))
  assert not {"cnn_tiny", "resnet_tiny", "vit_mu", "convnext_mu", "resnet8_gn"} & set(offered)
  with pytest.raises(errors.ConfigError, match="unknown"):
    models.spatial_dims("resnet9000")
  with pytest.raises(ValueError, match="spatial_dims"):
    models.names(spatial_dims=1)
