"""Client optimizers by name, and the client learning-rate schedule over the run."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base as base_config
from configs import quickstart
from fedjax_med import config as config_lib
from fedjax_med import errors, optimizers
from fedjax_med.algorithms import local
from tests.testing import mlp_apply, mlp_data, mlp_params


def masked_ce(params, batch, rng):
  del rng
  ce = optax.softmax_cross_entropy_with_integer_labels(mlp_apply(params, batch["image"]),
                                                        batch["label"])
  return jnp.sum(ce * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1), {}


def scales(fn, rounds):
  return [float(fn(r)) for r in range(rounds)]


def test_constant_without_warmup_is_no_schedule():
  assert optimizers.client_lr_scale(10) is None


def test_warmup_is_linear_and_reaches_the_peak_in_its_last_round():
  s = scales(optimizers.client_lr_scale(10, warmup_rounds=4), 10)
  np.testing.assert_allclose(s, [0.25, 0.5, 0.75, 1, 1, 1, 1, 1, 1, 1], rtol=1e-6)


def test_cosine_decays_from_the_peak_to_min_ratio_at_the_last_round():
  rounds, warm, lo = 12, 3, 0.1
  s = scales(optimizers.client_lr_scale(rounds, warm, "cosine", lo), rounds)
  np.testing.assert_allclose(s[:3], [1 / 3, 2 / 3, 1.0], rtol=1e-6)
  assert s[-1] == pytest.approx(lo, abs=1e-6)
  assert all(a > b for a, b in zip(s[2:], s[3:], strict=False))  # strictly decreasing after
  # The textbook cosine over the rounds after the peak: lo + (1 - lo) (1 + cos(pi t)) / 2.
  t = np.arange(1, rounds - warm + 1) / (rounds - warm)
  np.testing.assert_allclose(s[3:], lo + (1 - lo) * 0.5 * (1 + np.cos(np.pi * t)), rtol=1e-5)
  no_warm = scales(optimizers.client_lr_scale(5, 0, "cosine", 0.0), 5)
  np.testing.assert_allclose(no_warm, [1, 0.853553, 0.5, 0.146447, 0], atol=1e-5)


@pytest.mark.parametrize("kw,match", [
    ({"schedule": "linear"}, "constant or cosine"),
    ({"warmup_rounds": 10}, "warmup_rounds"),
    ({"warmup_rounds": -1}, "warmup_rounds"),
])
def test_bad_schedules_raise(kw, match):
  with pytest.raises(ValueError, match=match):
    optimizers.client_lr_scale(10, **kw)


@pytest.mark.parametrize("name,momentum", [("sgd", 0.0), ("momentum", 0.9), ("adamw", 0.0)])
def test_lr_scale_equals_running_the_optimizer_at_the_scaled_learning_rate(name, momentum):
  """``lr_scale`` s on the updates of opt(lr) is opt(s * lr), weight decay included."""
  loss_fn, params = masked_ce, mlp_params()
  x, y = mlp_data(n=24)
  data = {"image": x.reshape(3, 8, -1), "label": y.reshape(3, 8), "mask": np.ones((3, 8), bool)}
  lr, s, wd = 0.1, 0.3, 0.01
  scaled = local.local_train(loss_fn, optimizers.client(lr, momentum, wd, name), params, data,
                             jax.random.PRNGKey(0), lr_scale=jnp.float32(s))
  plain = local.local_train(loss_fn, optimizers.client(lr * s, momentum, wd, name), params,
                            data, jax.random.PRNGKey(0))
  chex.assert_trees_all_close(scaled.params, plain.params, rtol=1e-5, atol=1e-7)
  unscaled = local.local_train(loss_fn, optimizers.client(lr, momentum, wd, name), params, data,
                               jax.random.PRNGKey(0))
  assert not np.allclose(jax.tree.leaves(unscaled.params)[0], jax.tree.leaves(plain.params)[0])


def test_adamw_decays_only_the_params_collection():
  tx = optimizers.client(0.1, weight_decay=0.5, name="adamw")
  params = {"params": {"w": jnp.ones(3)}, "batch_stats": {"mean": jnp.ones(3)}}
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["params"]["w"], -0.1 * 0.5 * np.ones(3), rtol=1e-6)
  np.testing.assert_array_equal(updates["batch_stats"]["mean"], np.zeros(3))


def test_unknown_client_optimizer_raises():
  with pytest.raises(ValueError, match="choose one of"):
    optimizers.client(0.1, name="lion")


def resolved(**overrides):
  return config_lib.resolve(base_config.apply(quickstart.get_config(), overrides))


def test_client_momentum_defaults_by_optimizer():
  assert resolved(**{"fl.client_opt": "momentum"}).fl.client_momentum == 0.9
  assert resolved(**{"fl.client_opt": "sgd"}).fl.client_momentum == 0.0
  assert resolved(**{"fl.client_opt": "adamw"}).fl.client_momentum == 0.0
  assert resolved(**{"fl.client_momentum": 0.5}).fl.client_momentum == 0.5


@pytest.mark.parametrize("overrides,match", [
    ({"fl.client_opt": "lion"}, "fl.client_opt"),
    ({"fl.client_opt": "momentum", "fl.client_momentum": 0.0}, "needs a momentum"),
    ({"fl.client_opt": "adamw", "fl.client_momentum": 0.9}, "own first moment"),
    ({"algorithm.name": "scaffold", "fl.client_opt": "adamw"}, "plain local SGD"),
    ({"fl.client_lr_schedule": "step"}, "fl.client_lr_schedule"),
    ({"fl.client_warmup_rounds": 30}, "fl.client_warmup_rounds"),
    ({"fl.client_lr_min_ratio": 2.0}, "fl.client_lr_min_ratio"),
    ({"fl.client_weight_decay": float("inf")}, "fl.client_weight_decay"),
])
def test_bad_client_optimizer_settings_are_one_clear_error(overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.validate(resolved(**overrides))
