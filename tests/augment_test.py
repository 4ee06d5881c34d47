"""On-device augmentation: shapes, determinism by key, and that a shift is a translation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base as base_config
from fedjax_med import augment, errors
from fedjax_med import config as config_lib


def test_shift_is_a_translation_with_edge_padding():
  img = jnp.arange(2 * 6 * 6, dtype=jnp.float32).reshape(2, 6, 6, 1)
  out = augment.random_shift(jax.random.PRNGKey(0), img, 2)
  assert out.shape == img.shape
  padded = np.pad(np.asarray(img), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
  for b in range(2):
    windows = [padded[b, i:i + 6, j:j + 6] for i in range(5) for j in range(5)]
    assert any(np.array_equal(np.asarray(out[b]), w) for w in windows)


def test_same_key_same_output_and_none_is_identity():
  img = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 3))
  k = jax.random.PRNGKey(2)
  np.testing.assert_array_equal(augment.augment("flip_shift", k, img),
                                augment.augment("flip_shift", k, img))
  np.testing.assert_array_equal(augment.augment("none", k, img), img)
  with pytest.raises(ValueError, match="augmentation"):
    augment.augment("mixup", k, img)


def test_3d_shift_is_a_translation_of_the_volume():
  vol = jnp.arange(3 * 5 * 5 * 5, dtype=jnp.float32).reshape(3, 5, 5, 5, 1)
  out = augment.random_shift(jax.random.PRNGKey(3), vol, 1)
  assert out.shape == vol.shape
  padded = np.pad(np.asarray(vol), ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)), mode="edge")
  for b in range(3):
    windows = [padded[b, i:i + 5, j:j + 5, k:k + 5]
               for i in range(3) for j in range(3) for k in range(3)]
    assert any(np.array_equal(np.asarray(out[b]), w) for w in windows)


def test_3d_flip_is_left_right_only():
  vol = jax.random.normal(jax.random.PRNGKey(4), (16, 3, 4, 5, 1))
  out = np.asarray(augment.random_flip(jax.random.PRNGKey(5), vol))
  flipped = np.asarray(vol)[:, :, :, ::-1]
  kinds = [np.array_equal(o, v) or np.array_equal(o, f) * 2
           for o, v, f in zip(out, np.asarray(vol), flipped, strict=True)]
  assert all(kinds) and 1 in kinds and 2 in kinds  # each volume: as is, or mirrored in W


@pytest.mark.parametrize("name", ["organamnist", "organmnist3d"])
def test_flip_refused_for_sided_labels(name):
  config = base_config.get_config()
  config.data.name, config.data.augment = name, "flip_shift"
  config = config_lib.resolve(config)  # model.name "" -> the CNN for this data's dims
  with pytest.raises(errors.ConfigError, match=r"swap .*sided classes \(.*-left.*data.augment=shift"):
    config_lib.validate(config)
  config.data.augment = "shift"
  config_lib.validate(config)
