"""A run's privacy plan: the mechanism, its noise, and epsilon after every round, fixed
before training.

``make(config, partition, local_steps)`` turns ``config.privacy`` into what the
round and the trainer need: the ``RoundPlan`` mechanism (``dp_sgd.RecordDP`` or
``dp_fedavg.ClientDP``), the noise multiplier (given, or calibrated for a target
epsilon over the planned rounds), the Poisson sampling of the run (its slots),
and ``epsilon[r]``, the privacy spent after ``r`` rounds. Epsilon depends only on
the config and the data-independent sampling schedule, never on the data, so it
is computed for the whole run up front: a resumed run reads the same numbers
(the accountant continues exactly), and ``privacy.max_epsilon`` becomes the
last round that stays under it.

Which steps count. Record level: client c runs S DP-SGD steps in every round
it takes part in (``S x`` its rounds; an empty Poisson batch is a step too),
each with sampling rate ``q_c = min(1, B / n_c)``; the run reports the largest
epsilon over clients (the smallest client spends the most). Clients not sampled
in a round spend nothing; no amplification from client sampling is claimed. A
target epsilon is calibrated on this exact schedule (the participation is
seeded and data-independent, so it is known before training).
Client level: one release per round, sampling rate ``q = clients_per_round /
num_clients``; with BandMF of b bands (``privacy.mechanism=banded_mf``), ``ceil(r / b)``
releases at rate ``b q`` after r rounds (cyclic Poisson sampling, ``dp_fedavg``).
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import ml_collections
import numpy as np

from fedjax_med import batching, errors
from fedjax_med.partition import base as partition_base
from fedjax_med.privacy import accounting, dp_fedavg, dp_sgd

log = logging.getLogger(__name__)

# Probability that any Poisson sample of the whole run overflows its slots (the run
# then stops with an error rather than truncate, which would void the analysis).
OVERFLOW_PROBABILITY = 1e-6


class PrivacyPlan(NamedTuple):
  """What ``config.privacy`` resolves to for one run."""

  level: str  # "record" | "client"
  bands: int  # BandMF bands (client level; 1 = independent Gaussian noise)
  noise_multiplier: float  # sigma (given or calibrated)
  calibrated: bool  # sigma was calibrated from privacy.epsilon
  delta: float
  accountant: str
  mechanism: dp_sgd.RecordDP | dp_fedavg.ClientDP
  sampling_prob: float  # the largest q (record: of any client; client: of the clients)
  capacity: int  # record: examples slots per step; client: client slots per round
  epsilon: np.ndarray  # [rounds + 1] epsilon after r rounds (epsilon[0] = 0)
  noised_steps: np.ndarray  # [rounds + 1] the largest number of noised steps of a unit
  last_round: int  # the last round under privacy.max_epsilon (else fl.rounds)

  def summary(self, rounds_done: int, state_privacy=None) -> dict:
    """The ``privacy`` record of summary.json after ``rounds_done`` rounds (``state_privacy``:
    the server's ``ClientDPState``, whose clip norm adaptive clipping moved)."""
    final_clip = (self.mechanism.clip_norm if state_privacy is None
                  else float(state_privacy.clip_norm))
    return {
        "level": self.level, "noise_multiplier": self.noise_multiplier,
        "calibrated_from_epsilon": self.calibrated, "delta": self.delta,
        "accountant": self.accountant, "sampling_prob": self.sampling_prob,
        "clip_norm": self.mechanism.clip_norm, "final_clip_norm": final_clip,
        "bands": self.bands,
        "noised_steps": int(self.noised_steps[rounds_done]),
        "epsilon": float(self.epsilon[rounds_done]),
        "stopped_by_max_epsilon": self.last_round < len(self.epsilon) - 1,
    }


def make(config: ml_collections.ConfigDict, partition: partition_base.Partition | None,
         local_steps: int) -> PrivacyPlan | None:
  """The privacy plan of a resolved, validated config (``None`` without DP).

  Args:
    partition: what the clients train on (the centralized baseline: one pooled client);
      only record level reads it (client level depends on the config alone: a deployed
      server, which has no data, passes ``None``).
    local_steps: S.

  Raises:
    errors.ConfigError: delta too large for the protected population, a target
      epsilon no noise reaches, adaptive clipping without budget for the deltas,
      or a max_epsilon below one round's.
  """
  p, fl = config.privacy, config.fl
  if p.level == "none":
    return None
  if partition is None and p.level == "record":
    raise ValueError("record-level DP needs the partition (the clients' sizes)")
  rounds = fl.rounds
  sizes = None if partition is None else np.asarray(partition.sizes)
  population = int(sizes.max()) if p.level == "record" else fl.num_clients
  problem = accounting.check_delta(p.delta, population)
  if problem:
    unit = "records of the largest client" if p.level == "record" else "clients"
    raise errors.ConfigError(
        f"invalid --config.privacy.delta={p.delta!r}: {problem} ({population} {unit}); "
        "use a smaller delta")
  if p.level == "record":
    q = batching.record_sampling_probs(sizes, fl.batch_size)
    steps = _record_steps(config, partition.num_clients, local_steps)  # [rounds + 1, N]
    worst = (float(q.max()), rounds * local_steps)
  else:
    bands = p.bands if p.mechanism == "banded_mf" else 1
    q = np.array([min(1.0, bands * fl.clients_per_round / fl.num_clients)])
    # one release per round; a client's group is eligible every bands-th round
    steps = -(-np.arange(rounds + 1)[:, None] // bands)
    worst = (float(q[0]), int(steps[-1, 0]))
  sigma, calibrated = p.noise_multiplier, p.epsilon is not None
  if calibrated:
    try:
      sigma = accounting.calibrate_noise(p.epsilon, worst[0], worst[1], p.delta,
                                         accountant=p.accountant)
    except ValueError as e:
      raise errors.ConfigError(f"invalid --config.privacy.epsilon={p.epsilon!r}: {e}") from None
    if p.level == "record" and not np.all(steps[-1] == worst[1]):
      sigma = _calibrate_exact(sigma, p.epsilon, q, steps[-1], p.delta, p.accountant)
    log.info("privacy: noise multiplier %.4f calibrated for epsilon %g at delta %g over %d "
             "%s (q=%.4g)", sigma, p.epsilon, p.delta, worst[1],
             "steps" if p.level == "record" else "rounds", worst[0])
  epsilon = _epsilon_by_round(sigma, q, steps, p.delta, p.accountant)
  bands = 1
  if p.level == "record":
    mechanism = dp_sgd.RecordDP(float(p.clip_norm), float(sigma), int(fl.batch_size))
    capacity = max(batching.poisson_capacity(min(fl.batch_size, n), n,
                                             _tail(rounds * local_steps * len(sizes)))
                   for n in np.unique(sizes[sizes > 0]))
  else:
    strategy = None
    if p.mechanism == "banded_mf":
      bands = p.bands
      strategy = _strategy(rounds, bands)
      log.info("privacy: BandMF strategy of %d bands for %d rounds: %s", bands, rounds,
               np.round(strategy, 4).tolist())
    mechanism = dp_fedavg.ClientDP(
        float(sigma), float(fl.clients_per_round), float(p.clip_norm), p.target_quantile,
        float(p.clip_lr), p.count_noise, strategy)
    try:
      mechanism.delta_noise_multiplier()
    except ValueError as e:
      raise errors.ConfigError(f"invalid --config.privacy.count_noise={p.count_noise!r}: {e}"
                               ) from None
    group = -(-fl.num_clients // bands)  # the largest cyclic group
    capacity = batching.poisson_capacity(float(q[0]) * group, group, _tail(rounds))
  last = rounds
  if p.max_epsilon is not None:
    under = np.nonzero(epsilon <= p.max_epsilon * (1 + 1e-9))[0]
    last = int(under.max())
    if last == 0:
      raise errors.ConfigError(
          f"invalid --config.privacy.max_epsilon={p.max_epsilon!r}: one round already spends "
          f"epsilon {epsilon[1]:.4g}; raise it or add noise")
    if last < rounds:
      log.info("privacy: epsilon would pass max_epsilon %g in round %d; the run stops after "
               "round %d (epsilon %.4g)", p.max_epsilon, last + 1, last, epsilon[last])
  return PrivacyPlan(p.level, bands, float(sigma), calibrated, float(p.delta), p.accountant, mechanism,
                     float(q.max()), int(capacity), epsilon, steps.max(axis=1), last)


def _strategy(rounds: int, bands: int) -> tuple[float, ...]:
  """BandMF's Toeplitz coefficients (unit L2 norm) minimizing the mean squared error of the
  prefix sums over ``rounds`` (jax_privacy); one band is the identity."""
  if bands == 1:
    return (1.0,)
  from jax_privacy.matrix_factorization import toeplitz

  return tuple(float(c) for c in np.asarray(toeplitz.optimize_banded_toeplitz(rounds, bands)))


def _calibrate_exact(upper: float, target: float, q: np.ndarray, steps: np.ndarray,
                     delta: float, accountant: str, tol: float = 1e-3) -> float:
  """The smallest sigma (relative ``tol``) at which the run's own schedule stays within
  ``target``: max over clients of epsilon(sigma, q_c, steps_c). ``upper`` (calibrated for the
  worst client taking part in every round) satisfies it; with partial participation no
  client takes every step, so less noise does. Bisection on log sigma."""
  if upper == 0:  # an infinite target: no noise
    return 0.0
  keep = q > 0  # clients without records spend nothing
  q, steps = q[keep], steps[keep]

  def spent(sigma: float) -> float:
    return accounting.max_epsilon(sigma, q.tolist(), steps.tolist(), delta, accountant=accountant)

  lo = upper
  while lo > 1e-2 * upper and spent(lo / 2) <= target:
    lo /= 2
  lo, hi = lo / 2, upper  # spent(lo) > target >= spent(hi), unless lo hit the floor
  while hi / lo > 1 + tol:
    mid = float(np.sqrt(lo * hi))
    lo, hi = (lo, mid) if spent(mid) <= target else (mid, hi)
  return hi


def _tail(samples: int) -> float:
  return OVERFLOW_PROBABILITY / max(1, samples)


def _record_steps(config, num_clients: int, local_steps: int) -> np.ndarray:
  """[rounds + 1, N] noised DP-SGD steps of every client after r rounds (its rounds x S)."""
  fl = config.fl
  taken = np.zeros((fl.rounds + 1, num_clients), np.int64)
  if num_clients == 1 or fl.clients_per_round >= num_clients:  # every client, every round
    taken[:] = np.arange(fl.rounds + 1)[:, None]
  else:
    for r in range(fl.rounds):
      taken[r + 1] = taken[r]
      taken[r + 1, batching.sample_clients(num_clients, fl.clients_per_round, config.seed, r)] += 1
  return taken * local_steps


def _epsilon_by_round(sigma: float, q: np.ndarray, steps: np.ndarray, delta: float,
                      accountant: str) -> np.ndarray:
  """max over units u of epsilon(sigma, q_u, steps[r, u]) for every round r."""
  out = np.zeros(steps.shape[0])
  if sigma == math.inf:
    return out
  pairs: dict[float, list[int]] = {}  # units with the same q share one accountant curve
  for u, qu in enumerate(q):
    pairs.setdefault(float(qu), []).append(u)
  for qu, units in pairs.items():
    if qu <= 0:
      continue
    counts = steps[:, units]
    unique = np.unique(counts)
    values = accounting.epsilons(sigma, qu, unique.tolist(), delta, accountant=accountant)
    eps = dict(zip(unique.tolist(), np.asarray(values, float).tolist(), strict=True))
    out = np.maximum(out, np.vectorize(eps.get)(counts).max(axis=1))
  return out

