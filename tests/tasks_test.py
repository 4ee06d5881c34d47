"""The classification objectives (``fedjax_med.tasks``) against slow NumPy loops: softmax
cross-entropy over class ids, and the multi-label (ChestMNIST) sigmoid BCE over the labels."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_med import tasks


class Linear(nn.Module):
  """Logits ``x.reshape(B, -1) @ W + b``: the task under test, not the model."""

  outputs: int

  @nn.compact
  def __call__(self, x, train=False, mask=None):
    del train, mask
    return nn.Dense(self.outputs)(x.reshape(x.shape[0], -1))


def _setup(num_outputs, batch=6, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, 4, 4, 1)).astype(np.uint8)
  model = Linear(num_outputs)
  variables = tasks.init_variables(model, jax.random.PRNGKey(seed), (4, 4, 1))
  logits = np.asarray(tasks.make_predict_fn(model)(variables, images), np.float64)
  return rng, images, model, variables, logits


def reference_bce(logits, labels, mask):
  """Masked mean over examples of the mean over labels of -log sigmoid(+-z), one at a time."""
  total, count = 0.0, 0
  for i in range(len(labels)):
    if not mask[i]:
      continue
    per_label = []
    for z, y in zip(logits[i], labels[i], strict=True):
      p = 1.0 / (1.0 + math.exp(-z))
      per_label.append(-math.log(p) if y == 1 else -math.log(1.0 - p))
    total += sum(per_label) / len(per_label)
    count += 1
  return total / count


def reference_label_accuracy(logits, labels, mask):
  """Masked mean over examples of the fraction of labels right at sigmoid > 0.5."""
  hits = [np.mean([(1.0 / (1.0 + math.exp(-z)) > 0.5) == (y == 1)
                   for z, y in zip(logits[i], labels[i], strict=True)])
          for i in range(len(labels)) if mask[i]]
  return sum(hits) / len(hits)


def test_multi_label_loss_and_accuracy_match_a_loop():
  rng, images, model, variables, logits = _setup(5)
  labels = (rng.random((6, 5)) < 0.4).astype(np.int32)
  mask = np.array([True, True, False, True, True, True])  # a padding example: ignored
  loss_fn = tasks.make_loss_fn(model, multi_label=True)
  loss, aux = jax.jit(loss_fn)(variables, {"image": images, "label": labels, "mask": mask},
                               jax.random.PRNGKey(1))
  assert float(loss) == pytest.approx(reference_bce(logits, labels, mask), rel=1e-5)
  assert float(aux["accuracy"]) == pytest.approx(
      reference_label_accuracy(logits, labels, mask), rel=1e-6)


def test_single_label_loss_is_the_softmax_cross_entropy():
  rng, images, model, variables, logits = _setup(3)
  labels = rng.integers(0, 3, 6).astype(np.int32)
  mask = np.array([True, False, True, True, True, True])
  loss, aux = tasks.make_loss_fn(model)(
      variables, {"image": images, "label": labels, "mask": mask}, jax.random.PRNGKey(1))
  ce = [math.log(np.exp(logits[i]).sum()) - logits[i, labels[i]] for i in range(6) if mask[i]]
  assert float(loss) == pytest.approx(sum(ce) / len(ce), rel=1e-5)
  hits = [logits[i].argmax() == labels[i] for i in range(6) if mask[i]]
  assert float(aux["accuracy"]) == pytest.approx(sum(hits) / len(hits))


def test_multi_label_gradient_is_per_label_sigmoid_minus_label():
  # d/dz of the mean over L labels of BCE(z, y) is (sigmoid(z) - y) / L.
  z = jnp.array([[0.3, -1.2, 2.0]])
  y = jnp.array([[1, 0, 0]])
  grad = jax.grad(lambda z: tasks.example_loss(z, y, multi_label=True).sum())(z)
  np.testing.assert_allclose(grad, (jax.nn.sigmoid(z) - y) / 3, rtol=1e-6)


def test_label_shapes_must_match_the_task():
  logits = jnp.zeros((4, 3))
  with pytest.raises(ValueError, match="multi_label=True"):
    tasks.example_loss(logits, jnp.zeros((4, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"multi-label labels must be \[B, L\]"):
    tasks.example_loss(logits, jnp.zeros((4,), jnp.int32), multi_label=True)
