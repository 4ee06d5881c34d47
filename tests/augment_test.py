"""On-device augmentation: shapes, determinism by key, and that a shift is a translation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedjax_med import augment


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
