"""Tests of the Poisson (differential-privacy) samplers of fedjax_med.batching."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from fedjax_med import batching, errors
from fedjax_med import partition as partition_lib

# Around B = 4: q_c = 1 (n <= B), 0.8, 4/9 and 4/30; the last client owns nothing.
SIZES = (1, 3, 4, 5, 9, 30, 0)
N = sum(SIZES)
B = 4
# Pixel value = example index + 1 (0 is reserved for padding), so batches can be inverted.
IMAGES = np.broadcast_to((np.arange(N) + 1)[:, None, None, None], (N, 2, 2, 1)).astype(np.int32)
LABELS = (np.arange(N) % 7).astype(np.uint8)
PARTITION = partition_lib.Partition.from_lists(
    np.split(np.random.default_rng(0).permutation(N), np.cumsum(SIZES)[:-1])
)
ALL = np.arange(len(SIZES))
# No step of these tests can overflow: a client never draws more than its n_c <= 30.
CAPACITY = max(SIZES)
# Bounds of the frequency tests, in standard errors of a binomial proportion.
Z = 5.0


def _batch(client_ids=ALL, seed=0, round_idx=0, **kwargs):
  kwargs = {"local_steps": 3, "batch_size": B, "capacity": CAPACITY, **kwargs}
  return batching.make_poisson_client_batch(
      IMAGES, LABELS, PARTITION, np.asarray(list(client_ids)), seed=seed, round_idx=round_idx,
      **kwargs,
  )


def _example_ids(batch):
  """[C, S, capacity] example index in each slot, -1 for padding."""
  return batch.image[..., 0, 0, 0].astype(np.int64) - 1


def _row_of(batch, client):
  return int(np.flatnonzero(batch.client_id == client)[0])


def _assert_within(freq, p, trials, what):
  se = np.sqrt(np.maximum(p * (1 - p), 1e-12) / trials)
  dev = np.abs(freq - p) / se
  assert np.all(dev <= Z), f"{what}: max deviation {dev.max():.2f} SE > {Z} (p={p}, f={freq})"


# ----------------------------------------------------------------------------- record_sampling_probs


def test_record_sampling_probs():
  q = batching.record_sampling_probs(np.array(SIZES), B)
  np.testing.assert_allclose(q, [1, 1, 1, 0.8, 4 / 9, 4 / 30, 0])
  assert q.dtype == np.float64
  with pytest.raises(errors.ConfigError, match="batch_size"):
    batching.record_sampling_probs(np.array(SIZES), 0)
  with pytest.raises(errors.ConfigError, match="non-negative"):
    batching.record_sampling_probs(np.array([3, -1]), B)


# ----------------------------------------------------------------------------- make_poisson_client_batch


def test_shapes_dtypes_weights_and_padding_clients():
  batch = _batch(client_ids=[5, 2], pad_clients_to=4, local_steps=2, capacity=7)
  assert batch.image.shape == (4, 2, 7, 2, 2, 1) and batch.image.dtype == np.int32
  assert batch.label.shape == (4, 2, 7) and batch.label.dtype == np.int32
  assert batch.mask.shape == (4, 2, 7) and batch.mask.dtype == bool
  np.testing.assert_array_equal(batch.weight, np.array([30, 4, 0, 0], np.float32))
  np.testing.assert_array_equal(batch.client_id, [5, 2, -1, -1])
  assert not batch.mask[2:].any() and not batch.image[2:].any() and not batch.label[2:].any()


def test_slots_hold_the_clients_own_examples_once_per_step_then_padding():
  batch = _batch(local_steps=20)
  ids = _example_ids(batch)
  count = batch.mask.sum(-1)
  # Included examples fill a prefix of each step; padding slots are zero.
  np.testing.assert_array_equal(batch.mask, np.arange(CAPACITY) < count[..., None])
  assert not batch.image[~batch.mask].any() and not batch.label[~batch.mask].any()
  np.testing.assert_array_equal(batch.label[batch.mask], LABELS[ids[batch.mask]])
  for row, c in enumerate(batch.client_id):
    own = PARTITION.client(c)
    order = {int(e): i for i, e in enumerate(own)}
    for s in range(20):
      step = ids[row, s][batch.mask[row, s]]
      assert set(step.tolist()) <= set(own.tolist())
      assert len(set(step.tolist())) == len(step), "an example repeats within a step"
      # Filled in the client's partition order.
      assert [order[int(e)] for e in step] == sorted(order[int(e)] for e in step)
  # q = 1 clients (n <= B) take every example at every step; the empty client none.
  for c in (0, 1, 2):
    assert np.all(count[c] == SIZES[c])
  assert not batch.mask[6].any() and batch.weight[6] == 0


def test_inclusion_frequency_of_every_example_matches_q():
  rounds, steps = 40, 50  # 2000 Bernoulli trials per example
  hits = np.zeros(N)
  for r in range(rounds):
    batch = _batch(round_idx=r, local_steps=steps)
    hits += np.bincount(_example_ids(batch)[batch.mask], minlength=N)
  q = batching.record_sampling_probs(np.array(SIZES), B)
  q_example = np.empty(N)
  q_example[PARTITION.indices] = np.repeat(q, SIZES)
  _assert_within(hits / (rounds * steps), q_example, rounds * steps, "inclusion frequency")
  # Pooled over a client's examples (Binomial(n_c * trials, q_c) under Poisson sampling):
  # a much tighter check of q_c itself.
  for c, n in enumerate(SIZES):
    if n:
      pooled = hits[PARTITION.client(c)].sum() / (n * rounds * steps)
      _assert_within(np.array([pooled]), q[c], n * rounds * steps, f"client {c} pooled")


def test_step_sizes_are_binomial_not_fixed():
  # Poisson sampling: the step size of client c is Binomial(n_c, q_c), with variance.
  steps = 4000
  count = _batch(client_ids=[3, 4, 5], local_steps=steps).mask.sum(-1)  # [3, steps]
  for row, n in enumerate((5, 9, 30)):
    q = min(1, B / n)
    mean, var = n * q, n * q * (1 - q)
    assert abs(count[row].mean() - mean) <= Z * np.sqrt(var / steps)
    # Var of the sample variance ~ (mu4 - var^2) / steps; mu4 <= 3 var^2 + var here.
    assert abs(count[row].var() - var) <= Z * np.sqrt((2 * var**2 + var) / steps)
  # Joint inclusion of two examples of one client: q^2 (independence).
  ids = _example_ids(_batch(client_ids=[5], local_steps=steps))[0]
  a, b = PARTITION.client(5)[:2]
  both = ((ids == a).any(-1) & (ids == b).any(-1)).mean()
  _assert_within(np.array([both]), (4 / 30) ** 2, steps, "joint inclusion")


def test_empty_steps_occur_at_the_expected_rate_and_are_all_padding():
  steps = 3000
  batch = _batch(client_ids=[5], batch_size=1, local_steps=steps)  # q = 1/30
  empty = ~batch.mask[0].any(-1)
  _assert_within(np.array([empty.mean()]), (29 / 30) ** 30, steps, "empty-step rate")
  assert empty.any() and not empty.all()
  assert not batch.image[0][empty].any() and not batch.label[0][empty].any()
  # The client stays a real client with its weight on empty steps.
  assert batch.weight[0] == 30 and batch.client_id[0] == 5


def test_selection_is_a_function_of_seed_round_client_and_step_only():
  full = _batch(local_steps=4)
  for ids, pad in (([5, 3], None), ([3, 5], 8), ([5], None), ([6, 5, 0], 5)):
    part = _batch(client_ids=ids, local_steps=4, pad_clients_to=pad)
    for c in ids:
      for field in ("image", "label", "mask"):
        np.testing.assert_array_equal(
            getattr(part, field)[_row_of(part, c)], getattr(full, field)[_row_of(full, c)]
        )
  # Same arguments, same batch.
  again = _batch(local_steps=4)
  for x, y in zip(full, again, strict=True):
    np.testing.assert_array_equal(x, y)
  # Step s does not depend on S, and the sample does not depend on a sufficient capacity.
  longer = _batch(local_steps=9)
  np.testing.assert_array_equal(longer.mask[:, :4], full.mask)
  np.testing.assert_array_equal(longer.image[:, :4], full.image)
  tight = _batch(local_steps=4, capacity=int(full.mask.sum(-1).max()))
  np.testing.assert_array_equal(tight.image, full.image[:, :, : tight.image.shape[2]])


def test_rounds_seeds_and_steps_differ():
  base = _example_ids(_batch(client_ids=[5], local_steps=10))[0]
  other_round = _example_ids(_batch(client_ids=[5], local_steps=10, round_idx=1))[0]
  other_seed = _example_ids(_batch(client_ids=[5], local_steps=10, seed=1))[0]
  assert not np.array_equal(base, other_round)
  assert not np.array_equal(base, other_seed)
  assert len({tuple(step) for step in base}) > 5  # steps are not copies of each other


def test_capacity_overflow_raises_with_the_drawn_count():
  # The first overflowing step reports its exact size, as a large capacity would draw it.
  sizes = _batch(client_ids=[5], local_steps=10, round_idx=3).mask.sum(-1)[0]
  first = int(np.flatnonzero(sizes > 2)[0])
  msg = (
      f"drew {sizes[first]} examples for client 5 at step {first} of round 3, more than "
      "capacity=2"
  )
  with pytest.raises(RuntimeError, match=msg) as info:
    _batch(client_ids=[5], local_steps=10, round_idx=3, capacity=2)
  assert "Raise the capacity" in str(info.value)
  # A capacity equal to the largest step fits.
  _batch(client_ids=[5], local_steps=10, round_idx=3, capacity=int(sizes.max()))


def test_no_clients_and_multi_label():
  empty = _batch(client_ids=[], pad_clients_to=2)
  assert empty.mask.shape == (2, 3, CAPACITY) and not empty.mask.any()
  np.testing.assert_array_equal(empty.client_id, [-1, -1])
  multi = np.stack([LABELS, LABELS + 1], axis=1)
  batch = batching.make_poisson_client_batch(
      IMAGES, multi, PARTITION, [4, 5], local_steps=2, batch_size=B, capacity=CAPACITY,
      seed=0, round_idx=0,
  )
  assert batch.label.shape == (2, 2, CAPACITY, 2)
  ids = _example_ids(batch)
  np.testing.assert_array_equal(batch.label[batch.mask], multi[ids[batch.mask]])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"capacity": 0}, "capacity"),
        ({"local_steps": 0}, "local_steps"),
        ({"batch_size": 0}, "batch_size"),
        ({"client_ids": [7]}, "client ids"),
        ({"client_ids": [1, 2], "pad_clients_to": 1}, "pad_clients_to"),
        ({"seed": -1}, "seed"),
        ({"round_idx": -1}, "round_idx"),
    ],
)
def test_invalid_batch_arguments_raise(kwargs, match):
  with pytest.raises(errors.ConfigError, match=match):
    _batch(**kwargs)


# ----------------------------------------------------------------------------- sample_clients_poisson


def test_sample_clients_poisson_frequency_and_determinism():
  num, rate, rounds = 40, 0.3, 500
  draws = [batching.sample_clients_poisson(num, rate, 7, r) for r in range(rounds)]
  for ids in draws:
    assert ids.dtype == np.int32 and np.all(np.diff(ids) > 0)
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < num)
  freq = np.bincount(np.concatenate(draws), minlength=num) / rounds
  _assert_within(freq, rate, rounds, "client participation")
  sizes = np.array([len(ids) for ids in draws])
  assert len(set(sizes.tolist())) > 3  # the number of clients varies (Binomial)
  np.testing.assert_array_equal(batching.sample_clients_poisson(num, rate, 7, 3), draws[3])
  assert not np.array_equal(batching.sample_clients_poisson(num, rate, 8, 3), draws[3])
  # A stream of its own: not sample_clients' generator at the same (seed, round).
  plain = np.random.default_rng([7, 3]).random(num) < rate
  assert not np.array_equal(np.flatnonzero(plain), draws[3])


def test_sample_clients_poisson_rate_one_and_empty_rounds():
  np.testing.assert_array_equal(batching.sample_clients_poisson(6, 1.0, 0, 5), np.arange(6))
  draws = [batching.sample_clients_poisson(3, 0.01, 0, r) for r in range(50)]
  empty = [ids for ids in draws if ids.size == 0]
  assert empty and empty[0].dtype == np.int32 and empty[0].shape == (0,)


@pytest.mark.parametrize("rate", [0, -0.1, 1.5, float("nan"), True])
def test_sample_clients_poisson_invalid_rate(rate):
  with pytest.raises(errors.ConfigError, match="rate"):
    batching.sample_clients_poisson(10, rate, 0, 0)


# ----------------------------------------------------------------------------- poisson_capacity


def _exact_tail(n, expected, k):
  """P[Binomial(n, expected / n) > k], in exact rational arithmetic."""
  q = Fraction(expected, n)
  return sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k + 1, n + 1))


@pytest.mark.parametrize(
    "expected, population, tail",
    [(4, 30, 1e-9), (4, 9, 1e-9), (1, 30, 1e-3), (16, 200, 1e-12), (2, 5, 0.2), (32, 400, 1e-6)],
)
def test_poisson_capacity_is_the_smallest_k_with_tail_below(expected, population, tail):
  k = batching.poisson_capacity(expected, population, tail)
  assert 1 <= k <= population
  assert _exact_tail(population, expected, k) <= tail
  if k > 1:
    assert _exact_tail(population, expected, k - 1) > tail


def test_poisson_capacity_edge_cases():
  assert batching.poisson_capacity(30, 30) == 30  # q = 1
  assert batching.poisson_capacity(50, 30) == 30  # q > 1
  assert batching.poisson_capacity(0, 30) == 1  # q = 0: at least one slot
  assert batching.poisson_capacity(0.5, 1) == 1  # tiny population
  assert batching.poisson_capacity(1, 2, 0.3) == 1  # P[X > 1] = 0.25 <= 0.3
  assert batching.poisson_capacity(1, 2, 0.2) == 2
  # Smaller tails need more slots.
  caps = [batching.poisson_capacity(16, 1000, t) for t in (1e-3, 1e-6, 1e-9, 1e-12)]
  assert caps == sorted(caps) and caps[0] < caps[-1]


@pytest.mark.parametrize(
    "args, match",
    [((4, 0), "population"), ((-1, 10), "expected"), ((4, 10, 0), "tail"), ((4, 10, 1), "tail")],
)
def test_poisson_capacity_invalid(args, match):
  with pytest.raises(errors.ConfigError, match=match):
    batching.poisson_capacity(*args)
