"""Simulated site feature skew: deterministic, per-client, identity at strength 0."""

import numpy as np
import pytest

from fedjax_med import errors, partition
from fedjax_med.data import site_shift


def _setup():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (60, 8, 8, 1)).astype(np.uint8)
  part = partition.iid(60, 4, seed=0)
  return images, part


def test_strength_zero_is_identity_and_shift_is_deterministic():
  images, part = _setup()
  assert site_shift.apply(images, part, 0.0, seed=0) is images
  a = site_shift.apply(images, part, 1.0, seed=0)
  b = site_shift.apply(images, part, 1.0, seed=0)
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.uint8 and a.shape == images.shape
  assert not np.array_equal(a, site_shift.apply(images, part, 1.0, seed=1))


def test_clients_get_different_profiles_and_only_their_own_examples_change_with_them():
  images, part = _setup()
  shifted = site_shift.apply(images, part, 1.5, seed=3)
  means = [float(shifted[part.client(c)].mean() - images[part.client(c)].mean()) for c in range(4)]
  assert np.ptp(means) > 2.0  # sites differ in brightness/contrast
  # Changing one client's images does not change another client's output.
  other = images.copy()
  other[part.client(0)] = 0
  again = site_shift.apply(other, part, 1.5, seed=3)
  np.testing.assert_array_equal(again[part.client(1)], shifted[part.client(1)])


def test_bad_strength_is_a_config_error():
  images, part = _setup()
  with pytest.raises(errors.ConfigError, match="strength"):
    site_shift.apply(images, part, -1.0, seed=0)


def test_box_blur_3d_matches_a_loop():
  x = np.random.default_rng(1).random((2, 4, 5, 3, 1)).astype(np.float32)
  p = np.pad(x, ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)), mode="edge")
  ref = np.zeros_like(x)
  for n in range(2):
    for d in range(4):
      for h in range(5):
        for w in range(3):
          ref[n, d, h, w] = p[n, d:d + 3, h:h + 3, w:w + 3].mean(axis=(0, 1, 2))
  np.testing.assert_allclose(site_shift._box_blur(x), ref, rtol=1e-5, atol=1e-6)


def test_3d_volumes_get_each_clients_scanner():
  rng = np.random.default_rng(2)
  volumes = rng.integers(0, 256, (40, 6, 6, 6, 1)).astype(np.uint8)
  part = partition.iid(40, 4, seed=0)
  shifted = site_shift.apply(volumes, part, 1.5, seed=3)
  assert shifted.shape == volumes.shape and shifted.dtype == np.uint8
  means = [float(shifted[part.client(c)].mean() - volumes[part.client(c)].mean())
           for c in range(4)]
  assert np.ptp(means) > 2.0
  prof = site_shift.profiles(4, 1.5, 3)
  np.testing.assert_array_equal(shifted[part.client(2)],
                                site_shift.render(volumes[part.client(2)], 2, prof, 3))
