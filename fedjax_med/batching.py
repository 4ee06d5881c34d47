"""Host-side batching of one round: sampled clients -> a padded, stacked ClientBatch.

Everything is vectorized numpy over all sampled clients at once (no per-client
Python loop), so building a round of 1000+ clients from 10,000+ is a handful of
array operations. All randomness is stateless: it is a function of
``(seed, round_idx)`` (and the client id), so a resumed run needs no sampler state.

Example order. In round ``r`` client ``c`` with ``n_c`` examples uses step batch
size ``b_c = min(B, n_c)`` and walks through a random permutation of its examples,
``b_c`` per step; when the permutation is used up it continues with a fresh one
(a new epoch), so no example repeats before all of the client's examples were
seen. An epoch boundary may fall inside a step, so a step can hold an example
twice (once at the end of one epoch, once at the start of the next), as in
``repeat().batch()`` input pipelines. Slots ``b_c..B-1`` of every step are
padding. The permutations depend only on ``(seed, r, c)``: not on which other
clients were sampled, their order, or ``pad_clients_to``.

Poisson variants (differential privacy). Privacy amplification by subsampling, as
``dp_accounting`` accounts it, assumes Poisson sampling: every unit is included
independently with probability q, so the sample size is random.
:func:`sample_clients_poisson` draws the clients of a round that way (client-level
DP, DP-FedAvg); :func:`make_poisson_client_batch` builds record-level DP-SGD steps in
which client c includes each of its ``n_c`` examples independently with probability
``q_c = min(1, B / n_c)`` (:func:`record_sampling_probs`) at every step. A step then
holds a random number of examples in a fixed number of slots, ``capacity`` (see
:func:`poisson_capacity`); the rest is padding, and a step may be empty, which is a
real DP-SGD step (noise only), not padding. A step that draws more than
``capacity`` examples raises instead of truncating, since truncation would change
the privacy analysis. Each step's sample is drawn from the gaps between included
examples (geometric), so the work is proportional to the output, not to ``n_c``;
it is a pure function of ``(seed, r, c, step)`` through a stream of its own.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

import numpy as np

from fedjax_med import errors, types
from fedjax_med.partition import base as partition_base

T = TypeVar("T")

# Distinguishes the example-order stream from other uses of (seed, round).
_BATCH_STREAM = 1
# Streams of the Poisson samplers. Not 0: SeedSequence([s, r]) == SeedSequence([s, r, 0]),
# so 0 would reproduce sample_clients' stream.
_CLIENT_POISSON_STREAM = 2
_RECORD_POISSON_STREAM = 3
_CYCLIC_GROUP_STREAM = 4  # cyclic_groups' shuffle (not per round)
_DROPOUT_STREAM = 5  # which sampled clients fail to report (dropout_mask)
_STRAGGLER_STREAM = 6  # which sampled clients run fewer steps (straggler_mask)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def sample_clients(
    num_clients: int, clients_per_round: int, seed: int, round_idx: int
) -> np.ndarray:
  """The clients of round ``round_idx``: drawn without replacement, sorted.

  The draw uses ``np.random.default_rng([seed, round_idx])``, so it is a pure
  function of its arguments.

  Args:
    num_clients: the number of clients in the federation.
    clients_per_round: how many to sample, in ``[1, num_clients]``; equal to
      ``num_clients`` returns ``arange(num_clients)``.
    seed: a non-negative integer.
    round_idx: the round, a non-negative integer.

  Returns:
    [clients_per_round] int32 client ids, ascending.

  Raises:
    errors.ConfigError: invalid arguments.
  """
  num_clients = partition_base.check_int("num_clients", num_clients, minimum=1)
  clients_per_round = partition_base.check_int("clients_per_round", clients_per_round, minimum=1)
  if clients_per_round > num_clients:
    raise errors.ConfigError(
        f"clients_per_round={clients_per_round} exceeds num_clients={num_clients}; "
        "lower clients_per_round"
    )
  seed = partition_base.check_seed(seed)
  round_idx = partition_base.check_int("round_idx", round_idx, minimum=0)
  if clients_per_round == num_clients:
    return np.arange(num_clients, dtype=np.int32)
  rng = np.random.default_rng([seed, round_idx])
  return np.sort(rng.choice(num_clients, clients_per_round, replace=False)).astype(np.int32)


def make_client_batch(
    images: np.ndarray,
    labels: np.ndarray,
    partition: partition_base.Partition,
    client_ids: np.ndarray,
    *,
    local_steps: int,
    batch_size: int,
    seed: int,
    round_idx: int,
    pad_clients_to: int | None = None,
    local_epochs: float | None = None,
) -> types.ClientBatch:
  """Stacks the local data of the sampled clients for one round (see module doc).

  Args:
    images: [N, H, W, ch] training images (any dtype; kept, e.g. uint8).
    labels: [N] (or [N, L] multi-label) integer labels.
    partition: the partition of the N training examples into clients.
    client_ids: [C] int ids of the sampled clients.
    local_steps: S, local steps per client.
    batch_size: B, examples per step.
    seed: a non-negative integer.
    round_idx: the round, a non-negative integer.
    pad_clients_to: if given, append zero-weight padding clients up to this many
      (e.g. to a multiple of the device count).
    local_epochs: if given, client c runs ``min(S, ceil(E * n_c / b_c))`` real
      steps (E local epochs) and its later steps are padding; choose S with
      :func:`epoch_steps` so that no client is cut short.

  Returns:
    A ClientBatch of numpy arrays: image [C', S, B, H, W, ch] (images' dtype),
    label [C', S, B] int32, mask [C', S, B] bool, weight [C'] float32 (= n_c, 0
    for padding clients), client_id [C'] int32 (-1 for padding), where
    C' = ``pad_clients_to`` or C.

  Raises:
    errors.ConfigError: invalid arguments.
  """
  steps = partition_base.check_int("local_steps", local_steps, minimum=1)
  bsz = partition_base.check_int("batch_size", batch_size, minimum=1)
  seed = partition_base.check_seed(seed)
  round_idx = partition_base.check_int("round_idx", round_idx, minimum=0)
  images, labels, client_ids, num_out = _round_inputs(images, labels, partition, client_ids,
                                                      pad_clients_to)
  num_real = len(client_ids)

  n = partition.sizes[client_ids]  # [C] examples per client
  start = partition.offsets[client_ids]  # [C] where each client's indices begin
  b = np.minimum(bsz, n)  # [C] real examples per step
  if local_epochs is not None:
    if not local_epochs > 0:
      raise errors.ConfigError(f"local_epochs must be > 0, got {local_epochs}")
    client_steps = np.minimum(steps, np.ceil(local_epochs * n / np.maximum(b, 1)).astype(np.int64))
  else:
    client_steps = np.full(num_real, steps, np.int64)
  used = client_steps * b  # [C] slots filled per client this round

  # 1) Permutations: client c needs ceil(used / n) epochs, each a permutation of
  #    0..n-1. Element j of client c's run (epoch j // n, item j % n) gets a random
  #    key hashed from (seed, round, client id, j); sorting keys within each epoch
  #    shuffles it. Keys depend on the client id, not on its position in the round.
  epochs = np.where(n > 0, -(-used // np.maximum(n, 1)), 0)
  run = epochs * n  # [C] length of client c's run
  run_start = np.cumsum(run) - run
  run_client = np.repeat(np.arange(num_real), run)  # [T]
  j = np.arange(run.sum()) - run_start[run_client]  # [T] position within the run
  item = j % np.maximum(n[run_client], 1)
  epoch_group = np.repeat(np.cumsum(epochs) - epochs, run) + j // np.maximum(n[run_client], 1)
  round_key = np.random.SeedSequence([seed, round_idx, _BATCH_STREAM]).generate_state(
      1, np.uint64
  )
  client_key = _mix(round_key[0] ^ _mix(client_ids.astype(np.uint64)))  # [C]
  keys = _mix(client_key[run_client] ^ j.astype(np.uint64))  # [T]
  order = np.lexsort((keys, epoch_group))  # epochs stay contiguous, shuffled within
  perm = item[order]  # [T] local example index at each run position

  # 2) Slots: the first used[c] run positions of client c fill its steps b_c at a time.
  slot_client = np.repeat(np.arange(num_real), used)  # [M]
  t = np.arange(used.sum()) - (np.cumsum(used) - used)[slot_client]
  local = perm[run_start[slot_client] + t]
  example = partition.indices[start[slot_client] + local]  # [M] global example indices
  b_slot = b[slot_client]
  flat = (slot_client * steps + t // b_slot) * bsz + t % b_slot  # [M] into [C', S, B]

  # 3) Gather into zero-initialised (padding) arrays.
  size = num_out * steps * bsz
  image = np.zeros((size, *images.shape[1:]), images.dtype)
  image[flat] = images[example]
  label = np.zeros((size, *np.shape(labels)[1:]), np.int32)
  label[flat] = labels[example]
  mask = np.zeros(size, bool)
  mask[flat] = True
  weight, client_id = _client_fields(n, client_ids, num_out)
  lead = (num_out, steps, bsz)
  return types.ClientBatch(
      image=image.reshape(*lead, *images.shape[1:]),
      label=label.reshape(*lead, *np.shape(labels)[1:]),
      mask=mask.reshape(lead),
      weight=weight,
      client_id=client_id,
  )


def _round_inputs(images, labels, partition: partition_base.Partition, client_ids,
                  pad_clients_to: int | None):
  """Checked ``(images, labels, client_ids int64 [C], C')`` of a round's batch builder.

  Raises:
    errors.ConfigError: mismatched images and labels, client ids outside the
      partition, or ``pad_clients_to`` below the number of sampled clients.
  """
  images, labels = np.asarray(images), np.asarray(labels)
  if len(images) != len(labels):
    raise errors.ConfigError(f"{len(images)} images but {len(labels)} labels")
  client_ids = np.asarray(client_ids, dtype=np.int64).reshape(-1)
  num_real = len(client_ids)
  if num_real and (client_ids.min() < 0 or client_ids.max() >= partition.num_clients):
    raise errors.ConfigError(
        f"client ids must lie in [0, {partition.num_clients}), got "
        f"[{client_ids.min()}, {client_ids.max()}]"
    )
  num_out = num_real
  if pad_clients_to is not None:
    num_out = partition_base.check_int("pad_clients_to", pad_clients_to, minimum=0)
    if num_out < num_real:
      raise errors.ConfigError(
          f"pad_clients_to={num_out} is smaller than the {num_real} sampled clients"
      )
  return images, labels, client_ids, num_out


def _client_fields(n: np.ndarray, client_ids: np.ndarray, num_out: int):
  """``weight`` [C'] (= n_c, 0 for padding) and ``client_id`` [C'] (-1 for padding)."""
  weight = np.zeros(num_out, np.float32)
  weight[:len(client_ids)] = n
  client_id = np.full(num_out, -1, np.int32)
  client_id[:len(client_ids)] = client_ids
  return weight, client_id


def epoch_steps(sizes: np.ndarray, batch_size: int, local_epochs: float) -> int:
  """The S at which every client of ``sizes`` completes ``local_epochs`` epochs."""
  sizes = np.asarray(sizes)
  b = np.maximum(np.minimum(batch_size, sizes), 1)
  return int(max(1, np.ceil(local_epochs * sizes / b).max()))


def _mix(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser: a bijective, well-mixing hash of uint64 arrays."""
  x = np.asarray(x, dtype=np.uint64) + _GOLDEN
  x = (x ^ (x >> np.uint64(30))) * _M1
  x = (x ^ (x >> np.uint64(27))) * _M2
  return x ^ (x >> np.uint64(31))


def _client_uniforms(client_ids: np.ndarray, seed: int, round_idx: int, stream: int) -> np.ndarray:
  """[C] uniforms in [0, 1), a pure function of (seed, round, client id, stream) each."""
  round_key = np.random.SeedSequence([seed, round_idx, stream]).generate_state(1, np.uint64)
  ids = np.asarray(client_ids, dtype=np.int64).astype(np.uint64)
  return (_mix(round_key[0] ^ _mix(ids)) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def dropout_mask(client_ids: np.ndarray, rate: float, seed: int, round_idx: int) -> np.ndarray:
  """[C] bool: which sampled clients fail to report in round ``round_idx``.

  Each real client (id >= 0) fails independently with probability ``rate``; its draw
  depends only on (seed, round, client id), not on the other clients of the round, so
  a resumed run drops the same clients. Padding slots (id -1) are never marked.
  """
  client_ids = np.asarray(client_ids).reshape(-1)
  if rate <= 0:
    return np.zeros(client_ids.shape, bool)
  u = _client_uniforms(client_ids, seed, round_idx, _DROPOUT_STREAM)
  return (client_ids >= 0) & (u < rate)


def straggler_mask(client_ids: np.ndarray, fraction: float, seed: int,
                   round_idx: int) -> np.ndarray:
  """[C] bool: the stragglers of round ``round_idx``.

  ``round(fraction * n)`` of the ``n`` real clients (halves round up): those with the
  smallest seeded key, a pure function of (seed, round, client id), so the choice does
  not depend on the clients' order in the round.
  """
  client_ids = np.asarray(client_ids).reshape(-1)
  real = client_ids >= 0
  count = int(np.floor(fraction * real.sum() + 0.5))
  out = np.zeros(client_ids.shape, bool)
  if count <= 0:
    return out
  u = np.where(real, _client_uniforms(client_ids, seed, round_idx, _STRAGGLER_STREAM), np.inf)
  out[np.argsort(u, kind="stable")[:count]] = True
  return out


def simulate_failures(batch: types.ClientBatch, dropped: np.ndarray, stragglers: np.ndarray,
                      straggler_steps: int) -> types.ClientBatch:
  """``batch`` with dropped-out clients emptied and stragglers cut short.

  A dropped-out client keeps its id (its state row is read, never written) but weighs
  0 and has no real example, as a padding client; a straggler's steps from
  ``straggler_steps`` on hold no real example (the round skips them).
  """
  if not dropped.any() and not stragglers.any():
    return batch
  mask = batch.mask.copy()
  mask[dropped] = False
  mask[stragglers, straggler_steps:] = False
  weight = np.where(dropped, np.zeros((), batch.weight.dtype), batch.weight)
  return batch._replace(mask=mask, weight=weight)


def make_eval_batches(
    images: np.ndarray, labels: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Yields fixed-size batches over a split, the last one zero-padded.

  Every batch has the same shape, so a jitted eval step compiles once.

  Args:
    images: [N, H, W, ch] images.
    labels: [N] (or [N, L]) labels.
    batch_size: B.

  Yields:
    ``(image [B, H, W, ch], label [B] int32, mask [B] bool)``; ``mask`` is False
    on padding rows.
  """
  bsz = partition_base.check_int("batch_size", batch_size, minimum=1)
  images, labels = np.asarray(images), np.asarray(labels)
  if len(images) != len(labels):
    raise errors.ConfigError(f"{len(images)} images but {len(labels)} labels")
  for lo in range(0, len(images), bsz):
    real = min(bsz, len(images) - lo)
    image = np.zeros((bsz, *images.shape[1:]), images.dtype)
    image[:real] = images[lo : lo + real]
    label = np.zeros((bsz, *labels.shape[1:]), np.int32)
    label[:real] = labels[lo : lo + real]
    yield image, label, np.arange(bsz) < real


class Prefetcher(Generic[T]):
  """Builds round ``r + 1``'s batch in a background thread while round ``r`` runs.

  Example::

    with Prefetcher(lambda r: make_client_batch(..., round_idx=r)) as batches:
      for r in range(start, num_rounds):
        state, metrics = round_fn(state, batches.get(r))

  numpy releases the GIL in its bulk copies, so the gather overlaps with device
  work. Exceptions from the background build surface in :meth:`get`.
  """

  def __init__(self, make_batch: Callable[[int], T], *, stop: int | None = None):
    """Initialises the prefetcher.

    Args:
      make_batch: ``round_idx -> batch``; must be safe to call from another thread.
      stop: if given, rounds ``>= stop`` are never prefetched (the run's end).
    """
    self._make_batch = make_batch
    self._stop = stop
    self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    self._pending: tuple[int, concurrent.futures.Future[T]] | None = None

  def get(self, round_idx: int) -> T:
    """Returns round ``round_idx``'s batch and starts building the next one."""
    pending, self._pending = self._pending, None
    if pending is not None and pending[0] == round_idx:
      batch = pending[1].result()
    else:
      if pending is not None:
        pending[1].cancel()  # a stale guess (e.g. after a resume); its result is dropped
      batch = self._make_batch(round_idx)
    if self._stop is None or round_idx + 1 < self._stop:
      self._pending = (round_idx + 1, self._executor.submit(self._make_batch, round_idx + 1))
    return batch

  def close(self) -> None:
    """Stops the background thread (waits for a build in progress)."""
    self._pending = None
    self._executor.shutdown(wait=True, cancel_futures=True)

  def __enter__(self) -> Prefetcher[T]:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# ----------------------------------------------------------------------------- Poisson sampling


def poisson_capacity(expected: float, population: int, tail: float = 1e-9) -> int:
  """Slots that hold a Poisson sample of ``population`` units except with prob. <= ``tail``.

  Each unit is kept independently with probability ``q = expected / population``,
  so the sample size is ``Binomial(population, q)``; the capacity is the smallest
  ``k`` with ``P[Binomial(population, q) > k] <= tail`` (``scipy.stats.binom``),
  at least 1 and at most ``population``. For record-level DP-SGD use
  ``expected = min(batch_size, n_c)`` and ``population = n_c`` and take the maximum
  over clients; ``tail`` is then the chance that one step of one client overflows,
  so divide the failure probability you accept by rounds * clients * steps.

  Args:
    expected: the expected sample size, ``>= 0``; ``>= population`` (q >= 1) gives
      ``population``.
    population: the number of units, ``>= 1``.
    tail: the accepted overflow probability, in ``(0, 1)``.

  Returns:
    The capacity, an int in ``[1, population]``.

  Raises:
    errors.ConfigError: invalid arguments.
  """
  expected = partition_base.check_float("expected", expected)
  population = partition_base.check_int("population", population, minimum=1)
  tail = partition_base.check_float("tail", tail, positive=True)
  if tail >= 1:
    raise errors.ConfigError(f"tail must be < 1, got {tail}")
  q = expected / population
  if q >= 1:
    return population
  if q <= 0:
    return 1
  from scipy import stats  # noqa: PLC0415 -- a jax dependency; imported only where used

  dist = stats.binom(population, q)
  k = int(np.clip(dist.isf(tail), 0, population))
  # isf is computed in floating point: step to the exact smallest k with sf(k) <= tail.
  while k > 0 and dist.sf(k - 1) <= tail:
    k -= 1
  while k < population and dist.sf(k) > tail:
    k += 1
  return max(1, k)


def sample_clients_poisson(num_clients: int, rate: float, seed: int, round_idx: int) -> np.ndarray:
  """The clients of round ``round_idx`` under Poisson sampling (client-level DP).

  Every client takes part independently with probability ``rate``, so the number
  of clients varies from round to round and may be 0. The draw uses
  ``np.random.default_rng([seed, round_idx, 2])``, a stream distinct from
  :func:`sample_clients`' and :func:`make_client_batch`'s, so it is a pure function
  of its arguments.

  Args:
    num_clients: the number of clients in the federation.
    rate: the sampling probability q, in ``(0, 1]``; 1 returns
      ``arange(num_clients)``.
    seed: a non-negative integer.
    round_idx: the round, a non-negative integer.

  Returns:
    [C] int32 client ids, ascending; C is random (``Binomial(num_clients, rate)``).

  Raises:
    errors.ConfigError: invalid arguments.
  """
  num_clients = partition_base.check_int("num_clients", num_clients, minimum=1)
  rate = partition_base.check_float("rate", rate, positive=True)
  if rate > 1:
    raise errors.ConfigError(f"rate must be in (0, 1], got {rate}")
  seed = partition_base.check_seed(seed)
  round_idx = partition_base.check_int("round_idx", round_idx, minimum=0)
  if rate == 1:
    return np.arange(num_clients, dtype=np.int32)
  rng = np.random.default_rng([seed, round_idx, _CLIENT_POISSON_STREAM])
  return np.flatnonzero(rng.random(num_clients) < rate).astype(np.int32)


def cyclic_groups(num_clients: int, bands: int, seed: int) -> np.ndarray:
  """[N] the group in ``0..bands-1`` of every client for cyclic Poisson sampling: a seeded
  shuffle dealt round-robin, so group sizes differ by at most one."""
  num_clients = partition_base.check_int("num_clients", num_clients, minimum=1)
  bands = partition_base.check_int("bands", bands, minimum=1)
  seed = partition_base.check_seed(seed)
  # [seed, 0, stream]: a 2-element [seed, r] would be sample_clients' stream of round r
  order = np.random.default_rng([seed, 0, _CYCLIC_GROUP_STREAM]).permutation(num_clients)
  groups = np.empty(num_clients, np.int32)
  groups[order] = np.arange(num_clients) % bands
  return groups


def sample_clients_cyclic_poisson(num_clients: int, rate: float, bands: int, seed: int,
                                  round_idx: int) -> np.ndarray:
  """Cyclic Poisson sampling (BandMF, Choquette-Choo et al. 2023): only the clients of group
  ``round_idx % bands`` (:func:`cyclic_groups`) are eligible in round ``round_idx``, each
  taking part with probability ``rate``, so any client's participations are at least
  ``bands`` rounds apart. The draws are those of :func:`sample_clients_poisson` (one uniform
  per client), restricted to the group; ``bands=1`` is plain Poisson sampling."""
  groups = cyclic_groups(num_clients, bands, seed)
  drawn = sample_clients_poisson(num_clients, rate, seed, round_idx)
  return drawn[groups[drawn] == round_idx % bands].astype(np.int32)


def record_sampling_probs(sizes: np.ndarray, batch_size: int) -> np.ndarray:
  """Record-level sampling probability of every client, ``q_c = min(1, B / n_c)``.

  Args:
    sizes: [K] non-negative example counts (e.g. ``partition.sizes``).
    batch_size: B, the expected examples per step, ``>= 1``.

  Returns:
    [K] float64 ``q_c`` (0 for empty clients).

  Raises:
    errors.ConfigError: invalid arguments.
  """
  bsz = partition_base.check_int("batch_size", batch_size, minimum=1)
  sizes = np.asarray(sizes)
  if sizes.size and (not np.issubdtype(sizes.dtype, np.integer) or sizes.min() < 0):
    raise errors.ConfigError("sizes must be non-negative integers")
  sizes = sizes.astype(np.float64)
  return np.where(sizes > 0, np.minimum(1.0, bsz / np.maximum(sizes, 1.0)), 0.0)


def make_poisson_client_batch(
    images: np.ndarray,
    labels: np.ndarray,
    partition: partition_base.Partition,
    client_ids: np.ndarray,
    *,
    local_steps: int,
    batch_size: int,
    capacity: int,
    seed: int,
    round_idx: int,
    pad_clients_to: int | None = None,
) -> types.ClientBatch:
  """Record-level DP-SGD batches of the sampled clients for one round (Poisson).

  At each of the S steps, client c includes each of its ``n_c`` examples
  independently with probability ``q_c = min(1, B / n_c)`` (expected step size
  ``min(B, n_c)``; :func:`record_sampling_probs`). The included examples fill the
  first slots of a ``[capacity]`` step in the client's partition order (mask
  True); the other slots are padding. A step may be empty (mask all False): that
  is a real DP-SGD step (noise only), and callers must not treat it as padding.

  The sample is drawn as the gaps between included examples, which are i.i.d.
  ``Geometric(q_c)``: the k-th gap of step s comes from a hash of
  ``(seed, round_idx, c, s, k)``, so the whole round is a few vectorized array
  operations over ``[C, S, capacity + 1]`` (no per-client or per-example Python
  loop), and the work does not grow with ``n_c``. The selection depends only on
  ``(seed, round_idx, c, s)``: not on which other clients were sampled, their
  order, ``pad_clients_to``, ``local_steps`` (step s is the same for any S > s) or
  ``capacity`` (which only decides whether it fits).

  Args:
    images: [N, H, W, ch] training images (any dtype; kept, e.g. uint8).
    labels: [N] (or [N, L] multi-label) integer labels.
    partition: the partition of the N training examples into clients.
    client_ids: [C] int ids of the sampled clients (C may be 0).
    local_steps: S, local DP-SGD steps per client.
    batch_size: B, the expected examples per step.
    capacity: slots per step, ``>= 1``; see :func:`poisson_capacity`.
    seed: a non-negative integer.
    round_idx: the round, a non-negative integer.
    pad_clients_to: if given, append zero-weight padding clients up to this many.

  Returns:
    A ClientBatch of numpy arrays: image [C', S, capacity, H, W, ch] (images'
    dtype), label [C', S, capacity] int32, mask [C', S, capacity] bool, weight
    [C'] float32 (= n_c, 0 for padding clients), client_id [C'] int32 (-1 for
    padding), where C' = ``pad_clients_to`` or C.

  Raises:
    errors.ConfigError: invalid arguments.
    RuntimeError: a step drew more than ``capacity`` examples (never truncated,
      since truncation changes the privacy analysis); raise ``capacity``.
  """
  steps = partition_base.check_int("local_steps", local_steps, minimum=1)
  bsz = partition_base.check_int("batch_size", batch_size, minimum=1)
  cap = partition_base.check_int("capacity", capacity, minimum=1)
  seed = partition_base.check_seed(seed)
  round_idx = partition_base.check_int("round_idx", round_idx, minimum=0)
  images, labels, client_ids, num_out = _round_inputs(images, labels, partition, client_ids,
                                                      pad_clients_to)
  num_real = len(client_ids)

  n = partition.sizes[client_ids]  # [C]
  start = partition.offsets[client_ids]  # [C]
  q = record_sampling_probs(n, bsz)  # [C]
  round_key = np.random.SeedSequence([seed, round_idx, _RECORD_POISSON_STREAM]).generate_state(
      1, np.uint64
  )
  client_key = _mix(round_key[0] ^ _mix(client_ids.astype(np.uint64)))  # [C]
  positions = _poisson_positions(client_key, n, q, steps, cap + 1)  # [C, S, cap + 1]
  included = positions < n[:, None, None]  # a prefix of each step's row
  overflow = included[..., cap]  # [C, S]: the (cap + 1)-th inclusion still lies within n_c
  if overflow.any():
    row, step = (int(i[0]) for i in np.nonzero(overflow))
    # The exact count needs more gaps; each gap is >= 1, so n_c gaps always suffice.
    one = slice(row, row + 1)
    full = _poisson_positions(client_key[one], n[one], q[one], step + 1, int(n[row]))
    drawn = int((full[0, step] < n[row]).sum())
    raise RuntimeError(
        f"Poisson sampling drew {drawn} examples for client {int(client_ids[row])} at step "
        f"{step} of round {round_idx}, more than capacity={cap} (expected "
        f"{float(n[row] * q[row]):.3g} of n_c={int(n[row])}; {int(overflow.sum())} step(s) "
        "of this round overflow). Raise the capacity (see batching.poisson_capacity with a "
        "smaller tail); examples are never dropped, since truncation would change the "
        "privacy analysis"
    )

  mask = np.zeros((num_out, steps, cap), bool)
  mask[:num_real] = included[..., :cap]
  local = (start[:, None, None] + positions[..., :cap])[mask[:num_real]]
  example = partition.indices[local]  # global indices of the included examples, step-major
  image = np.zeros((num_out, steps, cap, *images.shape[1:]), images.dtype)
  image[mask] = images[example]
  label = np.zeros((num_out, steps, cap, *labels.shape[1:]), np.int32)
  label[mask] = labels[example]
  weight, client_id = _client_fields(n, client_ids, num_out)
  return types.ClientBatch(
      image=image, label=label, mask=mask, weight=weight, client_id=client_id
  )


def _poisson_positions(
    client_key: np.ndarray, n: np.ndarray, q: np.ndarray, steps: int, draws: int
) -> np.ndarray:
  """[C, steps, draws] int64 local indices of the first ``draws`` Bernoulli(q) inclusions.

  Row (c, s) lists, ascending, the examples that a pass over ``0, 1, 2, ...`` with
  independent ``Bernoulli(q[c])`` coins includes; entries ``>= n[c]`` lie beyond
  the client's data (so ``positions < n`` marks the step's sample). Gap k is
  ``floor(log(u) / log(1 - q)) + 1``, ``Geometric(q)`` by inversion, with ``u`` in
  (0, 1] hashed from ``(client_key[c], s, k)``.
  """
  step_key = _mix(client_key[:, None] ^ _mix(np.arange(steps, dtype=np.uint64)))  # [C, S]
  bits = _mix(step_key[..., None] ^ np.arange(draws, dtype=np.uint64))  # [C, S, draws]
  u = ((bits >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
  n_f = n.astype(np.float64)[:, None, None]
  q = q[:, None, None]
  with np.errstate(divide="ignore", invalid="ignore"):
    skip = np.log(u) / np.log1p(-q)  # >= 0; nan/-0 where q is 0 or 1, replaced below
  # q >= 1 keeps every example (gap 1); an empty client (q = 0) keeps nothing anyway.
  # Clipping the gap at n + 1 keeps the cumulative sum small without changing which
  # positions fall below n.
  skip = np.where((q > 0) & (q < 1), np.minimum(skip, n_f), 0.0)
  gap = np.floor(skip).astype(np.int64) + 1
  return np.cumsum(gap, axis=-1) - 1
