"""The eval-mode objective: batched lax.map loss equals the direct mean CE, BN in eval mode."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedjax_med import models, tasks
from fedjax_med.analysis import objective


def _bn_model_and_data():
  model = models.get_model("resnet_tiny_bn", 3, conv_impl="im2col")
  variables = tasks.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
  rng = np.random.default_rng(0)
  # Non-trivial running statistics, so eval mode differs from batch statistics.
  variables["batch_stats"] = jax.tree.map(
      lambda x: jnp.asarray(rng.uniform(0.5, 1.5, size=x.shape), jnp.float32),
      variables["batch_stats"])
  images = rng.integers(0, 256, size=(10, 8, 8, 1), dtype=np.uint8)
  labels = rng.integers(0, 3, size=(10,)).astype(np.int32)
  return model, variables, images, labels


def test_eval_loss_and_gradient_match_direct_mean_ce_with_padding():
  model, variables, images, labels = _bn_model_and_data()
  params, state = objective.split_variables(variables)
  assert set(state) == {"batch_stats"}

  def direct(params):
    logits = tasks.make_predict_fn(model)({"params": params, **state}, images)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

  @jax.jit
  def batched(params, images, labels):  # 10 examples in batches of 4: the last is padded
    f = objective.eval_loss_fn(model, images, labels, 4, model_state=state)  # remat batches
    return jax.value_and_grad(f)(params)

  loss, grad = batched(params, images, labels)
  want_loss, want_grad = jax.jit(jax.value_and_grad(direct))(params)
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
  chex.assert_trees_all_close(grad, want_grad, rtol=1e-4, atol=1e-6)

  batch_loss = objective.batch_loss_fn(model, state)
  np.testing.assert_allclose(jax.jit(batch_loss)(params, (images, labels)), want_loss, rtol=1e-5)


def test_multi_label_objective_is_the_mean_sigmoid_bce_over_labels():
  # [N, L] labels (ChestMNIST): the analysed loss is the training loss, BCE averaged over labels.
  model = models.get_model("cnn_tiny", 4)
  variables = tasks.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, size=(10, 8, 8, 1), dtype=np.uint8)
  labels = (rng.random((10, 4)) < 0.3).astype(np.int32)
  params, state = objective.split_variables(variables)
  logits = np.asarray(tasks.make_predict_fn(model)(variables, images), np.float64)
  p = 1 / (1 + np.exp(-logits))
  want = np.mean(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
  f = jax.jit(lambda p, x, y: objective.eval_loss_fn(model, x, y, 4, model_state=state)(p))
  np.testing.assert_allclose(f(params, images, labels), want, rtol=1e-5)  # padded last batch
  batch_loss = objective.batch_loss_fn(model, state)
  np.testing.assert_allclose(batch_loss(params, (images, labels)), want, rtol=1e-5)


def test_sharpness_report_on_multi_label_data_keeps_the_label_axis():
  from fedjax_med.analysis import measures

  model = models.get_model("cnn_tiny", 4)
  variables = tasks.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, size=(8, 8, 8, 1), dtype=np.uint8)
  labels = (rng.random((8, 4)) < 0.3).astype(np.int32)
  options = measures.SharpnessOptions(batch_size=4, lanczos_iters=0, probes=0, eps=0, m=4)
  out = measures.make_sharpness_fn(model, options)(variables, images, labels,
                                                   jax.random.PRNGKey(0))
  params, state = objective.split_variables(variables)
  want = objective.eval_loss_fn(model, images, labels, 4, model_state=state)(params)
  np.testing.assert_allclose(out["loss"], want, rtol=1e-6)
  assert np.isfinite(out["m_sharpness"])
