"""Simulated site feature skew: each client's images look like its own scanner's.

Hospitals differ in acquisition (contrast, exposure, sharpness, noise) even
for the same labels. ``apply`` gives every client a fixed, seeded acquisition
profile and renders its training images through it, once, before training:

- gamma ``g = exp(N(0, 0.4 s))`` (contrast curve ``x ** g``),
- intensity bias ``b ~ N(0, 0.08 s)`` (added, in [0, 1] units),
- blur: a 3x3 box blur (3x3x3 for 3D volumes) mixed in with weight ``w ~ U(0, s)``
  (clipped to 1),
- noise: Gaussian with std ``|N(0, 0.05 s)|`` per client, fresh per pixel.

``s = strength`` (0 = no shift, 1 = strong). Images ``[N, H, W, ch]`` and 3D
volumes ``[N, D, H, W, ch]`` alike (intensity, gamma and noise per voxel, blur
over every spatial axis). Pure numpy and seeded by
``(seed, client)``; the test split stays unshifted (the global model is evaluated
on the pooled, unshifted test split), and ``render`` shows a client's view of
any images (used for per-client test accuracy, ``fedjax_med/evaluation.py``).
"""

from __future__ import annotations

import itertools

import numpy as np

from fedjax_med.errors import ConfigError
from fedjax_med.partition.base import Partition


def profiles(num_clients: int, strength: float, seed: int) -> dict[str, np.ndarray]:
  """The per-client acquisition parameters (each [num_clients])."""
  if not 0 <= strength <= 10 or not np.isfinite(strength):
    raise ConfigError(f"site shift strength must be in [0, 10], got {strength}")
  rng = np.random.default_rng([seed, 7919])
  return {
      "gamma": np.exp(rng.normal(0.0, 0.4 * strength, num_clients)),
      "bias": rng.normal(0.0, 0.08 * strength, num_clients),
      "blur": np.clip(rng.uniform(0.0, strength, num_clients), 0.0, 1.0),
      "noise": np.abs(rng.normal(0.0, 0.05 * strength, num_clients)),
  }


def _box_blur(x: np.ndarray) -> np.ndarray:
  """3x3 (3D: 3x3x3) mean filter with edge padding over [N, H, W, ch] ([N, D, H, W, ch])."""
  spatial = x.shape[1:-1]
  p = np.pad(x, ((0, 0), *((1, 1),) * len(spatial), (0, 0)), mode="edge")
  windows = (p[(slice(None), *(slice(o, o + n) for o, n in zip(offset, spatial, strict=True)))]
             for offset in itertools.product(range(3), repeat=len(spatial)))
  return sum(windows) / float(3 ** len(spatial))


def apply(images: np.ndarray, partition: Partition, strength: float, seed: int) -> np.ndarray:
  """A copy of ``images`` [N, H, W, ch] (or [N, D, H, W, ch]) uint8, each client's examples shifted.

  Examples are shifted by the profile of the client that owns them.
  """
  if strength == 0:
    return images
  prof = profiles(partition.num_clients, strength, seed)
  out = np.empty_like(images)
  for c in range(partition.num_clients):  # one vectorized op per client (<= a few 1000 clients)
    idx = partition.client(c)
    if len(idx) == 0:
      continue
    out[idx] = render(images[idx], c, prof, seed)
  return out


def render(images: np.ndarray, client: int, prof: dict[str, np.ndarray], seed: int) -> np.ndarray:
  """``images`` [N, (D,) H, W, ch] uint8 as client ``client``'s scanner (``prof = profiles(...)``) sees them."""
  c = client
  x = images.astype(np.float32) / 255.0
  x = (1 - prof["blur"][c]) * x + prof["blur"][c] * _box_blur(x)
  x = np.power(np.clip(x, 0.0, 1.0), prof["gamma"][c]) + prof["bias"][c]
  noise_rng = np.random.default_rng([seed, 104729, c])
  x = x + noise_rng.normal(0.0, 1.0, x.shape).astype(np.float32) * prof["noise"][c]
  return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
