"""Learnable synthetic data in the official MedMNIST ``.npz`` layout, for tests.

Each class has a fixed spatial pattern: a Gaussian blob at its own position on
a ring around the image centre (for RGB, also tinted with its own colour). An
image is that pattern plus per-pixel Gaussian noise and a small brightness
jitter, so a linear model separates the classes well above chance within a few
dozen SGD steps, while the noise keeps the task from being trivial.

The patterns depend only on (number of classes, size, channels), never on the
seed: files written with different seeds are samples of the same task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from fedjax_med.data import medmnist
from fedjax_med.errors import ConfigError


def class_patterns(num_classes: int, size: int, channels: int) -> np.ndarray:
  """The noise-free class templates.

  Args:
    num_classes: number of classes K.
    size: image side in pixels.
    channels: 1 (gray) or 3 (RGB).

  Returns:
    ``[K, size, size, channels]`` float32 in [0, 1].
  """
  coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
  yy, xx = np.meshgrid(coords, coords, indexing="ij")
  angles = 2 * np.pi * np.arange(num_classes) / num_classes
  radius, sigma = 0.55, 0.25
  cy, cx = radius * np.sin(angles), radius * np.cos(angles)  # [K]
  dist2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
  blobs = np.exp(-dist2 / (2 * sigma**2))  # [K, H, W]
  if channels == 1:
    colors = np.ones((num_classes, 1), np.float32)
  else:
    # A distinct hue per class, spread around the colour wheel.
    phases = angles[:, None] + 2 * np.pi * np.arange(3)[None] / 3
    colors = 0.6 + 0.4 * np.cos(phases)  # [K, 3]
  return (blobs[..., None] * colors[:, None, None, :]).astype(np.float32)


def make_arrays(
  name: str = "pneumoniamnist",
  size: int = 28,
  n_train: int = 256,
  n_val: int = 64,
  n_test: int = 64,
  seed: int = 0,
  class_probs: Sequence[float] | None = None,
  noise: float = 0.2,
) -> dict[str, np.ndarray]:
  """Synthetic arrays with exactly the keys, dtypes and shapes of an official file.

  Args:
    name: MedMNIST flag whose classes and channels to imitate.
    size: image side in pixels, one of ``registry.SIZES``.
    n_train: number of training examples.
    n_val: number of validation examples.
    n_test: number of test examples.
    seed: seed for labels, noise and jitter.
    class_probs: class frequencies (normalised here); ``None`` means uniform.
    noise: standard deviation of the per-pixel noise, in units of full scale.

  Returns:
    ``{"train_images", "train_labels", "val_images", ...}``: images ``uint8``
    ``[N, size, size]`` (gray) or ``[N, size, size, 3]`` (RGB), labels
    ``uint8`` ``[N, 1]``.

  Raises:
    DataError: unknown name, unsupported size, or multi-label task.
    ConfigError: bad ``class_probs`` or negative split sizes.
  """
  info = medmnist.resolve_info(name, size)
  k = info.num_classes
  if class_probs is None:
    probs = np.full(k, 1.0 / k)
  else:
    probs = np.asarray(class_probs, np.float64)
    if probs.shape != (k,) or np.any(probs < 0) or probs.sum() <= 0:
      raise ConfigError(
        f"class_probs must be {k} non-negative numbers with a positive sum for {name}; "
        f"got {list(class_probs)}."
      )
    probs = probs / probs.sum()
  patterns = class_patterns(k, size, info.channels)
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in zip(medmnist.SPLITS, (n_train, n_val, n_test), strict=True):
    if n < 0:
      raise ConfigError(f"n_{split} must be >= 0, got {n}.")
    labels = rng.choice(k, size=n, p=probs)
    brightness = rng.uniform(-0.05, 0.05, size=(n, 1, 1, 1)).astype(np.float32)
    pixels = 0.25 + 0.5 * patterns[labels] + brightness
    pixels += noise * rng.standard_normal(pixels.shape, dtype=np.float32)
    images = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    if info.channels == 1:
      images = images[..., 0]  # Official gray files are [N, H, W].
    arrays[f"{split}_images"] = images
    arrays[f"{split}_labels"] = labels.astype(np.uint8)[:, None]
  return arrays


def write_npz(path: str | os.PathLike[str], **kwargs) -> str:
  """Writes :func:`make_arrays` output to ``path`` with ``np.savez_compressed``.

  Args:
    path: destination file; name it like the official file (e.g.
      ``root/pathmnist_64.npz``) to load it with ``medmnist.load``.
    **kwargs: forwarded to :func:`make_arrays`.

  Returns:
    The path written, as a string.
  """
  path = os.fspath(path)
  if not path.endswith(".npz"):
    path += ".npz"  # np.savez_compressed would append it silently.
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  np.savez_compressed(path, **make_arrays(**kwargs))
  return path


def make_dataset(name: str = "pneumoniamnist", size: int = 28, **kwargs) -> medmnist.Dataset:
  """A synthetic :class:`~fedjax_med.data.medmnist.Dataset`, as if loaded from a file.

  Args:
    name: MedMNIST flag whose classes and channels to imitate.
    size: image side in pixels.
    **kwargs: forwarded to :func:`make_arrays` (``n_train``, ``seed``, ...).

  Returns:
    The dataset; equal to ``medmnist.load`` of the file :func:`write_npz`
    writes with the same arguments (with ``verify_md5=False``).
  """
  arrays = make_arrays(name, size, **kwargs)
  return medmnist.from_arrays(name, arrays, size=size, source=f"synthetic {name}")
