"""Learnable synthetic data in the official MedMNIST ``.npz`` layout, for tests.

Each class has a fixed spatial pattern: a Gaussian blob at its own position on
a ring around the image centre (for RGB, also tinted with its own colour; for a
3D volume, the ring also winds up and down through the depth). An image is that
pattern plus per-pixel Gaussian noise and a small brightness jitter, so a
linear model separates the classes well above chance within a few dozen SGD
steps, while the noise keeps the task from being trivial. In a multi-label
task (ChestMNIST) every finding has its blob, each example draws each finding
independently, and its image holds the blobs of the findings it has.

The patterns depend only on (number of classes, size, channels), never on the
seed: files written with different seeds are samples of the same task.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from fedjax_med.data import medmnist
from fedjax_med.errors import ConfigError


def class_patterns(num_classes: int, size: int, channels: int, dims: int = 2) -> np.ndarray:
  """The noise-free class templates.

  Args:
    num_classes: number of classes K.
    size: image side in pixels.
    channels: 1 (gray) or 3 (RGB).
    dims: 2 (images) or 3 (volumes).

  Returns:
    ``[K, size, size, channels]`` (3D: ``[K, size, size, size, channels]``)
    float32 in [0, 1].
  """
  coords = np.linspace(-1.0, 1.0, size, dtype=np.float32)
  grid = np.meshgrid(*([coords] * dims), indexing="ij")  # (z,) y, x
  angles = 2 * np.pi * np.arange(num_classes) / num_classes
  radius, sigma = 0.55, 0.25
  centres = [radius * np.sin(angles), radius * np.cos(angles)]  # y, x: [K] each
  if dims == 3:
    centres.insert(0, 0.4 * np.sin(2 * angles))  # z: up and down around the ring
  expand = (slice(None),) + (None,) * dims
  dist2 = sum((g[None] - c[expand]) ** 2 for g, c in zip(grid, centres, strict=True))
  blobs = np.exp(-dist2 / (2 * sigma**2))  # [K, (D,) H, W]
  if channels == 1:
    colors = np.ones((num_classes, 1), np.float32)
  else:
    # A distinct hue per class, spread around the colour wheel.
    phases = angles[:, None] + 2 * np.pi * np.arange(3)[None] / 3
    colors = 0.6 + 0.4 * np.cos(phases)  # [K, 3]
  return (blobs[..., None] * colors[(slice(None),) + (None,) * dims]).astype(np.float32)


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
    size: image (volume) side in pixels, one of the dataset's sizes.
    n_train: number of training examples.
    n_val: number of validation examples.
    n_test: number of test examples.
    seed: seed for labels, noise and jitter.
    class_probs: class frequencies (normalised here); ``None`` means uniform.
      Multi-label: each finding's prevalence in [0, 1] (not normalised);
      ``None`` means 0.2 each.
    noise: standard deviation of the per-pixel noise, in units of full scale.

  Returns:
    ``{"train_images", "train_labels", "val_images", ...}``: images ``uint8``
    ``[N, size, size]`` (gray) or ``[N, size, size, 3]`` (RGB), 3D volumes
    ``[N, size, size, size]``; labels ``uint8`` ``[N, 1]`` (multi-label:
    ``[N, L]`` of 0 / 1).

  Raises:
    DataError: unknown name or unsupported size.
    ConfigError: bad ``class_probs`` or negative split sizes.
  """
  info = medmnist.resolve_info(name, size)
  k = info.num_classes
  if info.multi_label:
    probs = np.full(k, 0.2) if class_probs is None else np.asarray(class_probs, np.float64)
    if probs.shape != (k,) or np.any(probs < 0) or np.any(probs > 1):
      raise ConfigError(f"class_probs must be {k} prevalences in [0, 1] for the multi-label "
                        f"{name}; got {list(class_probs)}.")
  elif class_probs is None:
    probs = np.full(k, 1.0 / k)
  else:
    probs = np.asarray(class_probs, np.float64)
    if probs.shape != (k,) or np.any(probs < 0) or probs.sum() <= 0:
      raise ConfigError(
        f"class_probs must be {k} non-negative numbers with a positive sum for {name}; "
        f"got {list(class_probs)}."
      )
    probs = probs / probs.sum()
  patterns = class_patterns(k, size, info.channels, info.dims)
  rng = np.random.default_rng(seed)
  arrays = {}
  for split, n in zip(medmnist.SPLITS, (n_train, n_val, n_test), strict=True):
    if n < 0:
      raise ConfigError(f"n_{split} must be >= 0, got {n}.")
    if info.multi_label:
      labels = (rng.random((n, k)) < probs).astype(np.uint8)
      signal = np.clip(np.tensordot(labels.astype(np.float32), patterns, axes=1), 0.0, 1.0)
    else:
      labels = rng.choice(k, size=n, p=probs)
      signal = patterns[labels]
    brightness = rng.uniform(-0.05, 0.05, size=(n,) + (1,) * (info.dims + 1)).astype(np.float32)
    pixels = 0.25 + 0.5 * signal + brightness
    pixels += noise * rng.standard_normal(pixels.shape, dtype=np.float32)
    images = np.round(np.clip(pixels, 0.0, 1.0) * 255).astype(np.uint8)
    if info.channels == 1:
      images = images[..., 0]  # Official gray files are [N, H, W] ([N, D, H, W]).
    arrays[f"{split}_images"] = images
    arrays[f"{split}_labels"] = (labels if info.multi_label
                                 else labels.astype(np.uint8)[:, None])
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
