"""A site's own data: its MedMNIST-format ``.npz`` and its batches of a round.

A site file has the six keys of an official MedMNIST file (``train_images`` ...
``test_labels``; ``val`` / ``test`` may be empty) and holds only this site's images:
``train`` what it trains on, ``test`` its held-out share. ``python -m
fedjax_med.deploy.split`` cuts an official file into such files by the configured
partition, in the order the simulation's partition lists them, so that a site's
batches (:func:`site_batch`) are exactly the simulation's for that client.
"""

from __future__ import annotations

import zipfile

import numpy as np

from fedjax_med import batching, errors, partition, types
from fedjax_med.data import medmnist


def load_site(path: str, name: str, size: int) -> medmnist.Dataset:
  """The site's file, checked against dataset ``name`` at ``size`` (shape, dtype, classes).

  Raises:
    DataError: a missing, unreadable or malformed file, images of another shape or
      channel count, labels outside the dataset's classes, or no training example.
  """
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise errors.DataError(f"cannot read the site's data file {path}: {e}") from None
  ds = medmnist.from_arrays(name, arrays, size=size, source=path)
  if not len(ds.train.labels):
    raise errors.DataError(f"{path} holds no training example (train_images is empty)")
  return ds


def site_batch(images: np.ndarray, labels: np.ndarray, client_id: int, num_clients: int, *,
               local_steps: int, batch_size: int, seed: int, round_idx: int,
               straggler_steps: int | None = None) -> types.ClientBatch:
  """Client ``client_id``'s batch of round ``round_idx`` from its own examples ([1, S, B, ...]).

  The example order is a function of (seed, round, client id) and the local index only
  (``batching.make_client_batch``), so it equals the simulation's for the same client
  when ``images`` are that client's examples in partition order. A straggler's steps
  from ``straggler_steps`` on hold no example (``batching.simulate_failures``).
  """
  lists = [np.zeros(0, np.int64)] * num_clients
  lists[client_id] = np.arange(len(labels))
  part = partition.Partition.from_lists(lists)
  batch = batching.make_client_batch(images, labels, part, np.array([client_id]),
                                     local_steps=local_steps, batch_size=batch_size, seed=seed,
                                     round_idx=round_idx)
  if straggler_steps is not None:
    batch = batching.simulate_failures(batch, np.zeros(1, bool), np.ones(1, bool),
                                       straggler_steps)
  return batch
