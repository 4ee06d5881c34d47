"""Empirical privacy audit: a lower bound on epsilon from canaries, next to the accountant's.

The accountant (``privacy.plan``) gives an *upper* bound: the run is
(epsilon, delta)-DP if the mechanism is implemented as analysed. An audit gives
a *lower* bound from an attack: ``m`` canaries are each included independently
with probability 1/2, the run trains once, and a membership test scores every
canary (higher = more likely included). Steinke, Nasr & Jagielski 2023,
"Privacy Auditing with One (1) Training Run" (NeurIPS 2023), show that if the
run is (epsilon, delta)-DP with respect to each canary, the number of correct
guesses among the highest-scored canaries is stochastically dominated by a
Binomial with success probability ``e^eps / (1 + e^eps)`` (plus a delta term);
``jax_privacy.auditing.CanaryScoreAuditor.epsilon_one_run`` turns the observed
counts into the largest epsilon that this rejects at the chosen confidence,
with a Bonferroni correction over the score thresholds it tries. The bound is
valid (it exceeds the true epsilon with probability at most 1 - confidence), so
a lower bound above the accountant's epsilon means a bug in the mechanism or in
its accounting (or that rare event). It is usually far below: one run with
``m`` canaries cannot certify more than a ceiling that grows like ``log m``
(``epsilon_ceiling``, the bound of a perfect attack: 3.2 with 200 canaries and
4.7 with 1000 at 95 % and delta 1e-5; the delta term ``2 m delta`` of the test
makes it fall again for large ``m delta``), and an attack on the final model
sees much less than the worst case the accountant assumes.

Two canary designs, one per privacy level:

- **Record level** (DP-SGD): canary *examples* added to random clients' training
  data. Default ``"noise"``: uniform random-noise images, each with a uniformly
  drawn label. Noise images are far from the data and nearly orthogonal to
  each other, so an included canary's clipped gradient mostly lowers its own
  loss; and with labels drawn per canary there is no rule "noise -> class y"
  to learn from the included canaries that would lower the held-out ones' loss
  too (with one shared label it did: AUC 0.63 against 0.82 on the synthetic
  test data without noise, one seed). Score: ``baseline[y] - loss``, the canary's
  cross-entropy under the final model (eval mode) averaged over every view the
  training augmentation can produce (the +-2 px shifts, and flips: the model
  saw the canary only through them), against ``baseline[y]``, the same loss of
  its label on as many fresh noise images never trained on; the baseline
  removes the model's bias towards a class on noise images, which would
  otherwise rank the canaries by label instead of membership. ``"mislabeled"``:
  validation images with a wrong label, the black-box canary of Steinke et
  al., scored by minus their loss; weaker here (AUC 0.62 in the same test),
  because the loss of a mislabeled natural image depends mostly on how typical
  the image is. The run trains with the canaries through the normal round
  (``Experiment.algorithm`` rebuilt on the enlarged partition) and the
  accountant's epsilon is recomputed with ``privacy.plan.make`` on that
  partition (the clients' sizes, hence their sampling rates, change). Caveat:
  DP-SGD samples client c's records at ``q_c = B / n_c``, so a canary's
  inclusion also changes the rate of its client's other records; the
  accountant, like the usual analysis, treats ``n_c`` as public.
- **Client level** (DP-FedAvg): canary *clients* that do not train but upload a
  fixed random direction of norm 10 x the round's clip norm, so that the
  clipping scales it to exactly the clip norm (the largest contribution a
  client can make). Included canaries join the federation and are Poisson
  sampled like every client, at the plan's rate ``q``, so the accountant's
  epsilon is unchanged. Score: the cosine between the model's total change over
  the run and the canary's direction (Andrew et al. 2024, "One-shot Empirical
  Privacy Estimation for Federated Learning", ICLR 2024). The round is
  ``algorithms.base.stateless`` around FedAvg's client function (the same one
  ``algorithms.fedavg`` uses) that answers with the canary update for canary
  clients, marked by a negative label in their otherwise empty data; so only the
  FedAvg family (fedavg, fedavgm, fedadam, fedyogi, fedadagrad; SWA allowed)
  can be audited at client level.

Multi-label data (ChestMNIST, labels ``[N, L]``): a noise canary's label has
each finding drawn independently with probability 1/2, a mislabeled canary's
label is its image's labels with a uniformly drawn non-empty set of findings
flipped, and the loss is the training loss, the mean over the findings of the
sigmoid binary cross-entropy; ``baseline[y]`` is then the mean over findings
of each finding's mean loss at its value in ``y`` on the reference images.

Everything is seeded by ``seed`` (default ``config.seed``): which canaries are
included (its own stream: it depends only on ``(num_canaries, seed)``), the
canaries themselves and their clients.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fedjax_med import algorithms, batching, errors, experiment, optimizers, sharding, tasks, types
from fedjax_med.algorithms import aggregate, base, local, registry
from fedjax_med.partition import base as partition_base
from fedjax_med.privacy import mechanisms
from fedjax_med.privacy import plan as plan_lib

log = logging.getLogger(__name__)

CANARY_KINDS = ("noise", "mislabeled")
# A client canary's upload has this many times the round's clip norm: always clipped, to it.
CANARY_NORM_FACTOR = 10.0
# Seed streams of the audit, apart from every stream of the training run.
_INCLUSION_STREAM = 0x41554449  # "AUDI"
_CANARY_STREAM = 0x41554443  # "AUDC"
MAX_SHIFT = 2  # augment.random_shift's default, which the loss uses


class Canaries(NamedTuple):
  """The audit's canaries; ``images``/``labels``/``clients`` only at record level."""

  included: np.ndarray  # [m] bool, independently True with probability 1/2
  images: np.ndarray | None = None  # [m, H, W, ch] as the training images
  labels: np.ndarray | None = None  # [m] int32 (multi-label: [m, L] in {0, 1})
  clients: np.ndarray | None = None  # [m] int64 the client an included canary joins
  # [R, H, W, ch] noise canaries: fresh noise images, never trained on, whose loss under the
  # final model is each label's baseline (the model's bias on noise images)
  reference: np.ndarray | None = None


def draw_inclusion(num_canaries: int, seed: int) -> np.ndarray:
  """[m] bool: each canary included independently with probability 1/2 (seeded)."""
  m = partition_base.check_int("num_canaries", num_canaries, minimum=1)
  rng = np.random.default_rng([partition_base.check_seed(seed), _INCLUSION_STREAM])
  return rng.random(m) < 0.5


def record_canaries(dataset, partition: partition_base.Partition, num_canaries: int, seed: int,
                    kind: str = "noise") -> Canaries:
  """``num_canaries`` canary examples and the clients they join (see the module docstring).

  Args:
    dataset: the ``data.Dataset`` (image shape, dtype, classes; ``val`` for mislabeled).
    partition: the training partition; canaries join clients that hold data.
    kind: ``"noise"`` (uniform random images, each with a uniformly drawn label,
      plus as many fresh noise images as reference) or ``"mislabeled"``
      (validation images, each with a uniformly drawn wrong label). Multi-label:
      a label vector, uniform over the ``2^L`` (noise) or the ``2^L - 1`` wrong ones.
  """
  if kind not in CANARY_KINDS:
    raise errors.ConfigError(f"unknown canary kind {kind!r}; choose one of {CANARY_KINDS}")
  included = draw_inclusion(num_canaries, seed)
  m = len(included)
  rng = np.random.default_rng([seed, _CANARY_STREAM])
  k = int(dataset.num_classes)
  holders = np.flatnonzero(partition.sizes > 0)
  clients = holders[rng.integers(len(holders), size=m)].astype(np.int64)
  multi = bool(dataset.multi_label)
  if kind == "mislabeled":
    pool = dataset.val
    pick = rng.choice(len(pool.labels), m, replace=m > len(pool.labels))
    if multi:  # flip a uniform non-empty set of findings: a uniform wrong label vector
      flips = rng.integers(0, 2, (m, k))
      while (empty := ~flips.any(1)).any():
        flips[empty] = rng.integers(0, 2, (int(empty.sum()), k))
      labels = pool.labels[pick].astype(np.int64) ^ flips
    else:
      labels = (pool.labels[pick].astype(np.int64) + rng.integers(1, k, m)) % k
    return Canaries(included, pool.images[pick], labels.astype(np.int32), clients)
  train = dataset.train
  shape = (2 * m, *train.images.shape[1:])  # the canaries, then the reference images
  if np.issubdtype(train.images.dtype, np.integer):
    noise = rng.integers(0, 256, shape).astype(train.images.dtype)
  else:  # float images pass through preprocessing as they are: noise in [-1, 1]
    noise = rng.uniform(-1.0, 1.0, shape).astype(train.images.dtype)
  labels = rng.integers(0, 2, (m, k)) if multi else rng.integers(k, size=m)
  return Canaries(included, noise[:m], labels.astype(np.int32), clients, noise[m:])


def add_record_canaries(exp: experiment.Experiment, canaries: Canaries) -> experiment.Experiment:
  """``exp`` whose clients also hold the included canaries, with plan and round rebuilt.

  The included canaries are appended to the training images (indices ``N..``)
  and to their clients' example lists; ``privacy.plan.make`` recomputes the
  noise (if calibrated), the capacity and epsilon on the new client sizes, and
  the algorithm is rebuilt around the new DP-SGD mechanism.
  """
  inc = canaries.included
  train = exp.dataset.train
  n = len(train.labels)
  dataset = dataclasses.replace(exp.dataset, train=train._replace(
      images=np.concatenate([train.images, canaries.images[inc]]),
      labels=np.concatenate([train.labels, canaries.labels[inc].astype(train.labels.dtype)])))
  ids, owner = n + np.arange(int(inc.sum())), canaries.clients[inc]
  part = partition_base.Partition.from_lists(
      [np.concatenate([exp.partition.client(c), ids[owner == c]])
       for c in range(exp.partition.num_clients)])
  dp = plan_lib.make(exp.config, part, exp.local_steps)
  round_plan = exp.plan._replace(record_dp=dp.mechanism)
  return exp._replace(dataset=dataset, partition=part, privacy=dp, plan=round_plan,
                      algorithm=experiment.make_algorithm(exp.config, exp.loss_fn, round_plan))


def canary_direction(key: types.PRNGKey, index, like: types.PyTree, norm) -> types.PyTree:
  """Canary ``index``'s direction: Gaussian, scaled to L2 norm ``norm``, shaped like ``like``.

  Only the trainable ``"params"`` collection of a variables dict moves (zeros
  elsewhere: BatchNorm statistics must stay valid).
  """
  has_collections = isinstance(like, dict) and "params" in like
  target = like["params"] if has_collections else like
  z = mechanisms.gaussian_noise(jax.random.fold_in(key, index), target, 1.0)
  z = jax.tree.map(lambda x: x * (norm / aggregate.tree_norm(z)).astype(x.dtype), z)
  if not has_collections:
    return z
  return {name: (z if name == "params" else jax.tree.map(jnp.zeros_like, tree))
          for name, tree in like.items()}


def _client_canary_key(seed: int) -> types.PRNGKey:
  return jax.random.fold_in(jax.random.PRNGKey(seed), _CANARY_STREAM)


def add_client_canaries(exp: experiment.Experiment, included: np.ndarray, seed: int
                        ) -> tuple[experiment.Experiment, Callable[[int, int], types.ClientBatch]]:
  """``exp`` with the included canary clients and ``make_batch(round, pad_clients_to)``.

  Canary clients ``N..N+m_in-1`` (empty partitions) are Poisson sampled with the
  real clients at the plan's rate; their rows in a round's batch get weight 1
  and label ``-(canary index + 1)`` (their masks stay empty), which the round's
  client function turns into the canary's update.

  Raises:
    errors.ConfigError: an algorithm outside the FedAvg family.
  """
  config, fl = exp.config, exp.config.fl
  name = config.algorithm.name
  if registry.get(name).builder is not algorithms.fedavg:
    family = [n for n, e in registry.ENTRIES.items()
              if e.builder is algorithms.fedavg and "client" in e.privacy]
    raise errors.ConfigError(
        f"invalid --config.algorithm.name={name!r} for a client-level audit: its canary clients "
        f"are injected into FedAvg's client step; use one of {family}")
  num_real = exp.partition.num_clients
  canary_of = np.flatnonzero(included)  # client num_real + k is canary canary_of[k]
  part = partition_base.Partition.from_lists(
      [exp.partition.client(c) for c in range(num_real)] + [[]] * len(canary_of))
  dp = exp.privacy
  population = part.num_clients
  capacity = batching.poisson_capacity(dp.sampling_prob * population, population,
                                       plan_lib.OVERFLOW_PROBABILITY / max(1, fl.rounds))
  dp = dp._replace(capacity=int(capacity))
  round_plan = exp.plan._replace(num_clients=max(exp.plan.num_clients, population))
  client_tx = optimizers.client(fl.client_lr, fl.client_momentum, fl.client_weight_decay,
                                fl.client_opt)
  key = _client_canary_key(seed)
  loss_fn = exp.loss_fn

  def client_fn(state, data, rng):
    # algorithms.fedavg's client, then the canary's update where the data says "canary". A
    # canary's steps are all empty (skipped); its marker labels are zeroed for them anyway.
    marker = data["label"].reshape(-1)[0]
    data = {**data, "label": jnp.maximum(data["label"], 0)}
    res = local.local_train(loss_fn, client_tx, state.params, data, rng,
                            **base.train_options(round_plan, loss_fn, state))
    canary = marker < 0
    direction = canary_direction(key, jnp.maximum(-marker - 1, 0), state.params,
                                 CANARY_NORM_FACTOR * state.privacy.clip_norm)
    params = jax.tree.map(lambda p, trained, d: jnp.where(canary, p - d, trained),
                          state.params, res.params, direction)
    return local.LocalResult(params, jnp.where(canary, 0.0, res.loss),
                             jnp.where(canary, 0, res.steps))

  alg = base.stateless(client_fn, experiment.make_server_optimizer(config), round_plan,
                       f"{name} with canaries", privacy=("client",))
  if config.algorithm.swa:
    alg = algorithms.swa(alg, start_round=experiment.swa_start_round(config),
                         period=config.algorithm.swa_period)
  new = exp._replace(partition=part, privacy=dp, plan=round_plan, algorithm=alg)

  def make_batch(round_idx: int, pad_clients_to: int) -> types.ClientBatch:
    batch = new.make_batch(round_idx, pad_clients_to)
    is_canary = batch.client_id >= num_real
    label = batch.label.copy()
    marker = -(canary_of[batch.client_id[is_canary] - num_real] + 1)
    label[is_canary] = marker.reshape(-1, *[1] * (label.ndim - 1))  # [n, 1, 1(, 1)]
    weight = np.where(is_canary, 1.0, batch.weight).astype(np.float32)
    return batch._replace(label=label, weight=weight)

  return new, make_batch


def train(exp: experiment.Experiment,
          make_batch: Callable[[int, int], types.ClientBatch] | None = None,
          on_round: Callable[[int, int], None] | None = None) -> types.ServerState:
  """Runs ``exp`` for its planned rounds (``privacy.last_round``) with no output written.

  The round is the same jitted, sharded call as ``train.train_and_evaluate``'s
  (batches prefetched a round ahead); there is no evaluation, checkpoint or log.

  Args:
    make_batch: ``(round, pad_clients_to) -> ClientBatch`` (default ``exp.make_batch``).
    on_round: called with ``(rounds done, rounds)`` after every round.

  Raises:
    errors.NonFiniteLossError: the final model is not finite.
  """
  make_batch = make_batch or (lambda r, pad: exp.make_batch(r, pad_clients_to=pad))
  mesh = sharding.make_mesh()
  state = sharding.replicate(exp.initial_state(), mesh)
  pad = sharding.pad_multiple(exp.round_clients, mesh, exp.engine.client_chunk_size)
  end = exp.config.fl.rounds if exp.privacy is None else exp.privacy.last_round
  round_fn = sharding.jit_round(exp.algorithm.round, mesh)
  with batching.Prefetcher(lambda r: make_batch(r, pad), stop=end) as batches:
    for r in range(end):
      state, metrics = round_fn(state, sharding.shard_clients(batches.get(r), mesh))
      if on_round is not None:
        jax.block_until_ready(metrics)  # progress in rounds done, not dispatched
        on_round(r + 1, end)
  state = jax.device_get(state)
  if not all(np.isfinite(x).all() for x in jax.tree.leaves(state.params)):
    raise errors.NonFiniteLossError(
        "the audited run diverged (non-finite model); lower --config.fl.client_lr")
  return state


def augmented_views(images: np.ndarray, augment: str) -> np.ndarray:
  """[V, m, H, W, ch]: every image as the training augmentation ``augment`` can show it
  (all +-2 px edge-padded shifts, each also flipped for ``flip_shift``; 1 view for none)."""
  if augment == "none":
    return images[None]
  s = MAX_SHIFT
  _, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
  views = [padded[:, dy:dy + h, dx:dx + w] for dy in range(2 * s + 1) for dx in range(2 * s + 1)]
  if augment == "flip_shift":
    views += [v[:, :, ::-1] for v in views]
  return np.stack(views)


def record_scores(exp: experiment.Experiment, state: types.ServerState,
                  canaries: Canaries) -> np.ndarray:
  """[m] each canary's membership score under the final model (higher = more likely trained on).

  The loss of an image is its cross-entropy in eval mode averaged over its
  augmented views. Mislabeled canaries score minus their loss. Noise canaries
  score ``baseline[y] - loss``, where ``baseline[y]`` is the mean loss of label
  ``y`` on the reference noise images: it removes the model's bias towards
  some class on noise images, which would otherwise rank the canaries by
  label rather than by membership. Multi-label: the loss is the mean over
  findings of the sigmoid BCE, the baseline the mean over findings of each
  finding's mean loss at the canary's value. Algorithms whose clients keep their own
  model (``client_params``) score each canary under its client's model.
  """
  predict = tasks.make_predict_fn(exp.model)
  augment = exp.config.data.augment
  num_views = len(augmented_views(canaries.images[:1], augment))
  step = max(1, exp.config.eval.batch_size // num_views)
  multi = bool(exp.dataset.multi_label)

  @jax.jit
  def view_losses(params, views):  # [V, b, H, W, ch] -> mean over views
    logits = jax.vmap(predict, in_axes=(None, 0))(params, views)
    if multi:  # [b, L, 2]: each finding's BCE if its label were 0, if it were 1
      return -jnp.mean(jnp.stack([jax.nn.log_sigmoid(-logits), jax.nn.log_sigmoid(logits)],
                                 axis=-1), axis=0)
    return -jnp.mean(jax.nn.log_softmax(logits), axis=0)  # [b, K]

  def class_losses(params, images: np.ndarray) -> np.ndarray:  # [n, K] (multi: [n, L, 2])
    return np.concatenate([np.asarray(view_losses(params, augmented_views(images[lo:lo + step],
                                                                          augment)))
                           for lo in range(0, len(images), step)])

  def loss_of(losses: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[n] the loss of label ``labels[i]`` in row i of ``losses`` ([n, K] or [n, L, 2])."""
    if multi:
      return np.take_along_axis(losses, labels[..., None], axis=-1)[..., 0].mean(-1)
    return losses[np.arange(len(labels)), labels]

  def scores_under(params, rows: np.ndarray) -> np.ndarray:
    labels = canaries.labels[rows]
    scores = -loss_of(class_losses(params, canaries.images[rows]), labels)
    if canaries.reference is not None:
      baseline = class_losses(params, canaries.reference).mean(axis=0)  # [K] (multi: [L, 2])
      scores += loss_of(np.broadcast_to(baseline, (len(rows), *baseline.shape)), labels)
    return scores

  own = exp.algorithm.client_params
  if own is None:
    return scores_under(state.params, np.arange(len(canaries.labels)))
  out = np.zeros(len(canaries.labels))
  for c in np.unique(canaries.clients):
    rows = np.flatnonzero(canaries.clients == c)
    out[rows] = scores_under(own(state, int(c)), rows)
  return out


def client_scores(initial: types.Params, final: types.Params, num_canaries: int,
                  seed: int) -> np.ndarray:
  """[m] cosine of the model's total change ``initial - final`` with each canary's direction
  (the canaries' updates are ``+direction``, and the server descends along the mean update)."""
  key = _client_canary_key(seed)
  change = jax.tree.map(jnp.subtract, initial, final)
  if isinstance(change, dict) and "params" in change:
    change = {"params": change["params"]}
  norm = aggregate.tree_norm(change)

  def cosine(j):
    d = canary_direction(key, j, change, 1.0)
    return optax.tree.vdot(change, d) / jnp.maximum(norm, 1e-30)

  return np.asarray(jax.jit(lambda js: jax.lax.map(cosine, js))(jnp.arange(num_canaries)))


def empirical_epsilon(scores: np.ndarray, included: np.ndarray, delta: float,
                      confidence: float = 0.95) -> dict:
  """The one-run lower bound on epsilon from canary scores (higher score = included).

  ``CanaryScoreAuditor.epsilon_one_run`` (Steinke et al. 2023) at significance
  ``1 - confidence`` with a Bonferroni correction over the thresholds it tries.

  Returns:
    ``epsilon_lower_bound``, ``auc`` (of the scores as a membership test; the
    ROC curve's convex hull, so >= 1/2),
    ``epsilon_ceiling`` (the bound these canary counts give a perfect attack:
    no attack can certify more), ``canaries_in`` and ``canaries_out``.

  Raises:
    errors.ConfigError: every canary on one side (nothing to test), or a
      confidence outside (0, 1).
  """
  from jax_privacy import auditing  # the optional extra

  if not 0 < confidence < 1:
    raise errors.ConfigError(f"confidence must be in (0, 1), got {confidence}")
  scores, included = np.asarray(scores, np.float64), np.asarray(included, bool)
  n_in, n_out = int(included.sum()), int((~included).sum())
  if not n_in or not n_out:
    raise errors.ConfigError(
        f"all {len(included)} canaries were {'included' if n_in else 'held out'}: "
        "use more canaries (or another seed)")
  if not np.isfinite(scores).all():
    raise errors.NonFiniteLossError("non-finite canary scores; the audited run diverged")
  significance = 1.0 - confidence
  auditor = auditing.CanaryScoreAuditor(scores[included], scores[~included])
  perfect = auditing.CanaryScoreAuditor(np.ones(n_in), np.zeros(n_out))
  return {
      "epsilon_lower_bound": float(auditor.epsilon_one_run(significance, delta)),
      "auc": float(auditor.attack_auroc()),
      "epsilon_ceiling": float(perfect.epsilon_one_run(significance, delta)),
      "canaries_in": n_in,
      "canaries_out": n_out,
  }


def audit(config: ml_collections.ConfigDict, num_canaries: int, *, canary_kind: str = "noise",
          confidence: float = 0.95, seed: int | None = None,
          on_round: Callable[[int, int], None] | None = None) -> dict:
  """Trains ``config`` once with canaries and compares the empirical and accounted epsilon.

  Args:
    config: a run with ``privacy.level`` record or client.
    num_canaries: m >= 2, each included with probability 1/2.
    canary_kind: record level: ``"noise"`` or ``"mislabeled"`` (ignored at client level).
    confidence: of the lower bound, in (0, 1).
    seed: of the canaries and their inclusion (default ``config.seed``).
    on_round: progress callback ``(rounds done, rounds)``.

  Returns:
    A JSON-able dict: ``accountant_epsilon`` (the upper bound at ``delta``),
    ``epsilon_lower_bound`` (at ``confidence``), ``tightness`` (lower / upper;
    None when the upper bound is 0 or infinite), ``auc``, ``epsilon_ceiling``,
    ``canaries_in`` / ``canaries_out``, the score means of each side, and what
    was audited.

  Raises:
    errors.ConfigError / DataError: bad input (no DP, fewer than 2 canaries, ...).
    errors.NonFiniteLossError: the run diverged.
  """
  t0 = time.time()
  if isinstance(num_canaries, bool) or not isinstance(num_canaries, int) or num_canaries < 2:
    raise errors.ConfigError(f"the audit needs at least 2 canaries, got {num_canaries!r}")
  if canary_kind not in CANARY_KINDS:
    raise errors.ConfigError(f"unknown canary kind {canary_kind!r}; choose one of {CANARY_KINDS}")
  if not 0 < confidence < 1:
    raise errors.ConfigError(f"confidence must be in (0, 1), got {confidence}")
  if config.privacy.level == "none":
    raise errors.ConfigError(
        "nothing to audit: --config.privacy.level=none; set it to record or client")
  exp = experiment.build(config)
  seed = exp.config.seed if seed is None else seed
  level = exp.privacy.level
  included = draw_inclusion(num_canaries, seed)
  if included.all() or not included.any():
    raise errors.ConfigError(
        f"all {num_canaries} canaries were {'included' if included.all() else 'held out'}: "
        "use more canaries (or another seed)")
  if level == "record":
    canaries = record_canaries(exp.dataset, exp.partition, num_canaries, seed, canary_kind)
    exp = add_record_canaries(exp, canaries)
    state = train(exp, on_round=on_round)
    scores = record_scores(exp, state, canaries)
    loss = "the cross-entropy under the final model (mean over augmented views)"
    what = {"canary_kind": canary_kind,
            "score": (f"minus {loss}" if canary_kind == "mislabeled" else
                      f"its label's mean on fresh noise images minus {loss}")}
  else:
    exp, make_batch = add_client_canaries(exp, included, seed)
    initial = jax.device_get(exp.initial_state().params)
    state = train(exp, make_batch, on_round=on_round)
    scores = client_scores(initial, state.params, num_canaries, seed)
    what = {"canary_kind": "client update along a random direction (clipped to the clip norm)",
            "score": "cosine of the model's total change with the canary direction"}
  dp = exp.privacy
  rounds = dp.last_round
  upper = float(dp.epsilon[rounds])
  bound = empirical_epsilon(scores, included, dp.delta, confidence)
  lower = bound["epsilon_lower_bound"]
  tight = lower / upper if 0 < upper < math.inf else None
  log.info("audit: accountant epsilon %.4g, empirical lower bound %.4g (AUC %.3f)", upper, lower,
           bound["auc"])
  return {
      "level": level,
      **what,
      "num_canaries": num_canaries,
      **bound,
      "accountant_epsilon": upper,
      "tightness": tight,
      "consistent": bool(lower <= upper),
      "confidence": confidence,
      "method": "one run (Steinke, Nasr & Jagielski 2023): jax_privacy.auditing."
                "CanaryScoreAuditor.epsilon_one_run, Bonferroni over thresholds",
      "delta": dp.delta,
      "accountant": dp.accountant,
      "noise_multiplier": dp.noise_multiplier,
      "clip_norm": dp.mechanism.clip_norm,
      "rounds": rounds,
      "score_mean_in": float(np.mean(scores[included])),
      "score_mean_out": float(np.mean(scores[~included])),
      "seed": seed,
      "config": exp.config.to_dict(),
      "wall_time_s": round(time.time() - t0, 3),
  }
