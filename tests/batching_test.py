"""Tests of fedjax_med.batching: client sampling, round batches, prefetching, eval batches."""

from __future__ import annotations

import numpy as np
import pytest

from fedjax_med import batching, errors
from fedjax_med import partition as partition_lib

# Client sizes around B = 4: smaller than B, equal, and several epochs' worth or less.
SIZES = (1, 3, 4, 5, 9, 30)
N = sum(SIZES)
S, B = 3, 4
# Pixel value = example index + 1 (0 is reserved for padding), so batches can be inverted.
IMAGES = np.broadcast_to((np.arange(N) + 1)[:, None, None, None], (N, 2, 2, 1)).astype(np.int32)
LABELS = (np.arange(N) % 7).astype(np.uint8)
PARTITION = partition_lib.Partition.from_lists(
    np.split(np.random.default_rng(0).permutation(N), np.cumsum(SIZES)[:-1])
)


def _batch(client_ids=range(len(SIZES)), seed=0, round_idx=0, **kwargs):
  kwargs = {"local_steps": S, "batch_size": B, **kwargs}
  return batching.make_client_batch(
      IMAGES, LABELS, PARTITION, np.asarray(list(client_ids)), seed=seed, round_idx=round_idx,
      **kwargs,
  )


def _example_ids(batch):
  """[C, S, B] example index in each slot, -1 for padding."""
  return batch.image[..., 0, 0, 0].astype(np.int64) - 1


def _real_sequence(batch, c):
  """Client row c's examples in the order it sees them (step-major)."""
  ids = _example_ids(batch)[c]
  return ids[batch.mask[c]]


def _assert_batches_equal(a, b):
  for x, y in zip(a, b, strict=True):
    np.testing.assert_array_equal(x, y)


def test_shapes_and_dtypes():
  batch = _batch(pad_clients_to=8)
  assert batch.image.shape == (8, S, B, 2, 2, 1) and batch.image.dtype == np.int32
  assert batch.label.shape == (8, S, B) and batch.label.dtype == np.int32
  assert batch.mask.shape == (8, S, B) and batch.mask.dtype == bool
  assert batch.weight.shape == (8,) and batch.weight.dtype == np.float32
  assert batch.client_id.shape == (8,) and batch.client_id.dtype == np.int32


def test_uint8_images_keep_their_dtype():
  images = np.random.default_rng(0).integers(0, 256, (N, 28, 28, 3), dtype=np.uint8)
  batch = batching.make_client_batch(
      images, LABELS, PARTITION, [2, 5], local_steps=2, batch_size=3, seed=0, round_idx=0
  )
  assert batch.image.dtype == np.uint8 and batch.image.shape == (2, 2, 3, 28, 28, 3)
  ids = np.where(batch.mask, _example_ids(_batch([2, 5], local_steps=2, batch_size=3)), 0)
  np.testing.assert_array_equal(batch.image[batch.mask], images[ids[batch.mask]])


def test_examples_belong_to_their_client_and_labels_match():
  batch = _batch()
  ids = _example_ids(batch)
  for row, c in enumerate(batch.client_id):
    assert set(ids[row][batch.mask[row]]) <= set(PARTITION.client(c).tolist())
  np.testing.assert_array_equal(batch.label[batch.mask], LABELS[ids[batch.mask]])
  np.testing.assert_array_equal(batch.weight, np.array(SIZES, np.float32))


@pytest.mark.parametrize("round_idx", [0, 1, 7])
def test_each_epoch_is_a_permutation_of_the_client_data(round_idx):
  batch = _batch(round_idx=round_idx, local_steps=5)
  for row, c in enumerate(batch.client_id):
    own = np.sort(PARTITION.client(c))
    n, b = len(own), min(B, len(own))
    seq = _real_sequence(batch, row)
    assert len(seq) == 5 * b
    for lo in range(0, len(seq), n):
      chunk = seq[lo : lo + n]
      assert len(np.unique(chunk)) == len(chunk)  # no repeat before the data is exhausted
      if len(chunk) == n:
        np.testing.assert_array_equal(np.sort(chunk), own)


def test_client_smaller_than_batch_is_padded():
  batch = _batch([1])  # 3 examples, B = 4
  assert batch.mask[0, :, :3].all() and not batch.mask[0, :, 3:].any()
  assert (batch.image[0, :, 3:] == 0).all() and (batch.label[0, :, 3:] == 0).all()
  for s in range(S):  # every step holds all 3 examples once
    np.testing.assert_array_equal(
        np.sort(_example_ids(batch)[0, s, :3]), np.sort(PARTITION.client(1))
    )
  assert batch.weight[0] == 3


def test_padding_clients_have_zero_weight_and_no_data():
  batch = _batch([4, 0], pad_clients_to=5)
  np.testing.assert_array_equal(batch.client_id, [4, 0, -1, -1, -1])
  np.testing.assert_array_equal(batch.weight, [9, 1, 0, 0, 0])
  assert not batch.mask[2:].any()
  assert (batch.image[2:] == 0).all() and (batch.label[2:] == 0).all()
  # Padding does not change the real clients' data.
  _assert_batches_equal(
      [x[:2] for x in batch], [x[:2] for x in _batch([4, 0], pad_clients_to=None)]
  )


def test_deterministic_by_seed_and_round():
  _assert_batches_equal(_batch(seed=1, round_idx=2), _batch(seed=1, round_idx=2))
  ids = _example_ids(_batch(seed=1, round_idx=2))
  assert not np.array_equal(ids, _example_ids(_batch(seed=1, round_idx=3)))
  assert not np.array_equal(ids, _example_ids(_batch(seed=2, round_idx=2)))


def test_client_data_does_not_depend_on_the_other_sampled_clients():
  a = _batch([5, 2], round_idx=4)
  b = _batch([0, 2, 3, 5], round_idx=4)
  np.testing.assert_array_equal(a.image[0], b.image[3])
  np.testing.assert_array_equal(a.image[1], b.image[1])


def test_multi_label_labels_keep_trailing_axis():
  labels = (np.arange(N)[:, None] >> np.arange(3)) & 1
  batch = batching.make_client_batch(
      IMAGES, labels, PARTITION, [5], local_steps=S, batch_size=B, seed=0, round_idx=0
  )
  assert batch.label.shape == (1, S, B, 3)
  ids = _example_ids(batch)
  np.testing.assert_array_equal(batch.label[batch.mask], labels[ids[batch.mask]])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"local_steps": 0}, "local_steps must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"client_ids": [0, 6]}, r"client ids must lie in \[0, 6\)"),
        ({"client_ids": [-1]}, r"client ids must lie in \[0, 6\)"),
        ({"pad_clients_to": 3}, "pad_clients_to=3 is smaller than the 6 sampled clients"),
        ({"seed": -1}, "seed must be >= 0"),
    ],
)
def test_invalid_batch_arguments_raise(kwargs, match):
  with pytest.raises(errors.ConfigError, match=match):
    _batch(**kwargs)


def test_sample_clients_without_replacement_and_deterministic():
  a = batching.sample_clients(100, 10, seed=0, round_idx=5)
  assert a.dtype == np.int32 and len(a) == 10 and len(np.unique(a)) == 10
  assert (np.diff(a) > 0).all() and a.min() >= 0 and a.max() < 100
  np.testing.assert_array_equal(a, batching.sample_clients(100, 10, seed=0, round_idx=5))
  assert not np.array_equal(a, batching.sample_clients(100, 10, seed=0, round_idx=6))
  assert not np.array_equal(a, batching.sample_clients(100, 10, seed=1, round_idx=5))
  np.testing.assert_array_equal(batching.sample_clients(7, 7, seed=3, round_idx=9), np.arange(7))


def test_sample_clients_covers_all_clients_over_rounds():
  seen = np.concatenate([batching.sample_clients(50, 5, 0, r) for r in range(200)])
  assert len(np.unique(seen)) == 50


@pytest.mark.parametrize(
    "args,match",
    [
        ((10, 11, 0, 0), "clients_per_round=11 exceeds num_clients=10"),
        ((10, 0, 0, 0), "clients_per_round must be >= 1"),
        ((10, 5, 0, -1), "round_idx must be >= 0"),
    ],
)
def test_sample_clients_invalid(args, match):
  with pytest.raises(errors.ConfigError, match=match):
    batching.sample_clients(*args)


def _round_batch(round_idx):
  ids = batching.sample_clients(len(SIZES), 3, seed=0, round_idx=round_idx)
  return _batch(ids, round_idx=round_idx, pad_clients_to=4)


def test_prefetcher_matches_direct_calls():
  with batching.Prefetcher(_round_batch, stop=6) as prefetcher:
    for r in range(6):
      _assert_batches_equal(prefetcher.get(r), _round_batch(r))
    # Out of order (e.g. after a resume): built synchronously, still correct.
    _assert_batches_equal(prefetcher.get(2), _round_batch(2))
    _assert_batches_equal(prefetcher.get(3), _round_batch(3))


def test_prefetcher_raises_errors_of_the_background_build():
  def make(r):
    if r == 1:
      raise RuntimeError("bad round")
    return r

  prefetcher = batching.Prefetcher(make)
  assert prefetcher.get(0) == 0
  with pytest.raises(RuntimeError, match="bad round"):
    prefetcher.get(1)
  assert prefetcher.get(5) == 5
  prefetcher.close()


def test_eval_batches_are_fixed_size_and_cover_the_split():
  batches = list(batching.make_eval_batches(IMAGES, LABELS, 8))
  assert len(batches) == -(-N // 8)
  for image, label, mask in batches:
    assert image.shape == (8, 2, 2, 1) and label.shape == (8,) and mask.shape == (8,)
    assert label.dtype == np.int32
  images = np.concatenate([b[0][b[2]] for b in batches])
  np.testing.assert_array_equal(images, IMAGES)
  assert batches[-1][2].sum() == N - 8 * (len(batches) - 1)
  assert (batches[-1][0][~batches[-1][2]] == 0).all()


def test_scale_10k_clients_1k_sampled():
  # 10,000 clients of ~5 examples, 1,000 per round, S=5, B=8 (a few tens of ms).
  n = 50_000
  images = np.zeros((n, 28, 28, 1), np.uint8)
  labels = np.zeros(n, np.int32)
  part = partition_lib.quantity(n, 10_000, seed=0, sigma=0.5)
  ids = batching.sample_clients(10_000, 1_000, seed=0, round_idx=0)
  batch = batching.make_client_batch(
      images, labels, part, ids, local_steps=5, batch_size=8, seed=0, round_idx=0,
      pad_clients_to=1024,
  )
  assert batch.image.shape == (1024, 5, 8, 28, 28, 1)
  np.testing.assert_array_equal(batch.mask.sum((1, 2))[:1000], 5 * np.minimum(8, part.sizes[ids]))


def test_local_epochs_give_size_dependent_real_steps():
  sizes = np.array([3, 10, 25])
  part = partition_lib.Partition.from_lists(
      [np.arange(s) + o for s, o in zip(sizes, np.cumsum(sizes) - sizes, strict=True)])
  n = int(sizes.sum())
  images = np.arange(n, dtype=np.int32).reshape(n, 1, 1, 1)
  labels = np.zeros(n, np.int32)
  steps = batching.epoch_steps(sizes, 4, 1.0)
  assert steps == 7  # ceil(25 / 4)
  cb = batching.make_client_batch(images, labels, part, np.arange(3), local_steps=steps,
                                  batch_size=4, seed=0, round_idx=0, local_epochs=1.0)
  real_steps = cb.mask.any(axis=2).sum(axis=1)
  np.testing.assert_array_equal(real_steps, [1, 3, 7])  # ceil(n / min(4, n))
  for c, size in enumerate(sizes):  # one epoch: every example exactly once... or nearly
    seen = cb.image[c][cb.mask[c]].ravel()
    assert set(seen) == set(part.client(c)) and len(seen) >= size
