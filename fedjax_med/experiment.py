"""One experiment builder: from a config to everything a run needs.

``build(config) -> Experiment`` resolves and validates the config, loads the
data, partitions it, chooses the execution engine, builds the model, the loss,
the algorithm (through ``algorithms.registry``), the per-round batch function
and the evaluator, and computes the bytes a round sends. Nothing is written:
``train.train_and_evaluate`` only loops over what this returns, and
``analysis.runs`` rebuilds a finished run the same way.

Data flow: config -> data -> partition -> batching -> round -> evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
import optax

from fedjax_med import (
  algorithms,
  batching,
  compression,
  data,
  engine,
  errors,
  evaluation,
  models,
  optimizers,
  partition,
  tasks,
  types,
)
from fedjax_med import config as config_lib
from fedjax_med.algorithms import registry
from fedjax_med.data import site_shift
from fedjax_med.partition import holdout

log = logging.getLogger(__name__)


class Experiment(NamedTuple):
  """Everything a run is built from, before any output is written."""

  config: ml_collections.ConfigDict  # resolved (what config.json records)
  dataset: data.Dataset  # training images site-shifted where configured
  partition: partition.Partition  # what clients train on (centralized: one pooled "client")
  sites: holdout.Holdout  # the sites' training and held-out shares (evaluation per site)
  engine: engine.Engine
  model: Any  # flax module
  loss_fn: types.LossFn
  plan: algorithms.RoundPlan
  algorithm: types.FederatedAlgorithm
  federated: bool  # False for the centralized baseline
  local_steps: int  # S of every round (fixed for the run: compile once)
  evaluator: evaluation.Evaluator
  bytes_up_per_round: int  # every sampled client's (compressed) upload
  bytes_down_per_round: int  # the model sent to every sampled client
  privacy: Any = None  # privacy.plan.PrivacyPlan, or None without DP
  # C x params x 4 bytes of stacked client deltas a round holds (robust aggregators; 0 = mean)
  stacked_delta_bytes: int = 0

  @property
  def round_clients(self) -> int:
    """Client slots of a round: clients_per_round, or the Poisson cohort's bound (client DP)."""
    if self.privacy is not None and self.privacy.level == "client":
      return self.privacy.capacity
    return self.config.fl.clients_per_round

  def make_batch(self, round_idx: int, pad_clients_to: int) -> types.ClientBatch:
    """Round ``round_idx``'s sampled clients and their local data (host numpy).

    With DP the sampling is Poisson (what the accountant assumes): of the clients
    (client level, ``pad_clients_to`` >= ``round_clients``) or of every client's
    records at every step (record level, ``privacy.capacity`` slots a step).
    """
    c, fl, dp = self.config, self.config.fl, self.privacy
    client_ids = self.sampled_ids(round_idx)
    if dp is not None and dp.level == "record":
      batch = batching.make_poisson_client_batch(
          self.dataset.train.images, self.dataset.train.labels, self.partition, client_ids,
          local_steps=self.local_steps, batch_size=fl.batch_size, capacity=dp.capacity,
          seed=c.seed, round_idx=round_idx, pad_clients_to=pad_clients_to)
    else:
      batch = batching.make_client_batch(
          self.dataset.train.images, self.dataset.train.labels, self.partition, client_ids,
          local_steps=self.local_steps, batch_size=fl.batch_size, seed=c.seed,
          round_idx=round_idx, pad_clients_to=pad_clients_to,
          local_epochs=fl.local_epochs or None,
      )
    dropped, stragglers = self.failures(round_idx, batch.client_id)
    return batching.simulate_failures(batch, dropped, stragglers, fl.straggler_steps)

  def sampled_ids(self, round_idx: int) -> np.ndarray:
    """The clients sampled in round ``round_idx`` (the draw ``make_batch`` makes)."""
    return sample_clients(self.config, self.privacy, self.partition.num_clients, round_idx)

  def participants(self, rounds: int) -> np.ndarray:
    """[num_sites] bool: the sites that trained in one of the first ``rounds`` rounds (sampled
    and not dropped out; a client whose result was non-finite is not known here and counts).
    Every site took part in a centralized run (its share is in the pool)."""
    sites = self.sites.train.num_clients
    if not self.federated:
      return np.ones(sites, bool)
    seen = np.zeros(sites, bool)
    for r in range(rounds):
      ids = self.sampled_ids(r)
      dropped, _ = self.failures(r, ids)
      seen[ids[~dropped]] = True
      if seen.all():
        break
    return seen

  def failures(self, round_idx: int, client_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(dropped, stragglers)`` [C] bool of round ``round_idx`` (``fl.dropout_rate``,
    ``fl.straggler_fraction``): seeded by (seed, round, client id); a dropped-out client
    is never also a straggler."""
    fl, seed = self.config.fl, self.config.seed
    dropped = batching.dropout_mask(client_ids, fl.dropout_rate, seed, round_idx)
    stragglers = batching.straggler_mask(client_ids, fl.straggler_fraction, seed, round_idx)
    return dropped, stragglers & ~dropped

  def initial_state(self) -> types.ServerState:
    """The algorithm's state at round 0 (also the template to restore checkpoints into)."""
    return initial_state(self.config.seed, self.model, self.algorithm, self.dataset.image_shape)


def sample_clients(config: ml_collections.ConfigDict, privacy_plan, num_clients: int,
                   round_idx: int) -> np.ndarray:
  """Round ``round_idx``'s sampled client ids, sorted: ``fl.clients_per_round`` of them, or
  under client-level DP (``privacy_plan``) a cyclic Poisson sample (the simulation's draw
  and a deployed server's)."""
  dp = privacy_plan
  if dp is not None and dp.level == "client":
    return batching.sample_clients_cyclic_poisson(num_clients, dp.sampling_prob, dp.bands,
                                                  config.seed, round_idx)
  return batching.sample_clients(num_clients, config.fl.clients_per_round, config.seed,
                                 round_idx)


def initial_state(seed: int, model, algorithm: types.FederatedAlgorithm,
                  image_shape: tuple[int, ...]) -> types.ServerState:
  """Round 0's state of a run of ``seed``: the model initialized and the algorithm's state
  keyed from ``PRNGKey(seed)`` (the simulation and a deployed server build the same one)."""
  init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
  params = tasks.init_variables(model, init_key, image_shape)
  return algorithm.init(params, state_key)


def make_engine(config: ml_collections.ConfigDict) -> engine.Engine:
  """The execution engine (client chunk, conv lowering, unroll) the config resolves to."""
  fl = config.fl
  return engine.choose(fl.clients_per_round, client_chunk_size=fl.client_chunk_size,
                       conv_impl=config.model.conv_impl, local_unroll=fl.local_unroll)


def make_plan(config: ml_collections.ConfigDict, eng: engine.Engine, *, privacy_plan=None,
              attack: algorithms.attacks.Attack | None = None) -> algorithms.RoundPlan:
  """The ``RoundPlan`` of ``config``: aggregator, compression, client lr schedule, and the
  privacy mechanism and attack given (the simulation's and a deployed round's)."""
  fl = config.fl
  compressor = make_compressor(config)
  aggregator = algorithms.aggregators.get(
      config.aggregator.name,
      **{k: config.aggregator[k] for k in algorithms.aggregators.PARAMS[config.aggregator.name]})
  level = privacy_plan.level if privacy_plan is not None else None
  return algorithms.RoundPlan(
      aggregator=aggregator, num_clients=fl.num_clients, chunk_size=eng.client_chunk_size,
      unroll=eng.local_unroll,
      compressor=compressor, error_feedback=bool(config.comm.error_feedback and compressor),
      client_lr_scale=optimizers.client_lr_scale(
          fl.rounds, fl.client_warmup_rounds, fl.client_lr_schedule, fl.client_lr_min_ratio),
      record_dp=privacy_plan.mechanism if level == "record" else None,
      client_dp=privacy_plan.mechanism if level == "client" else None,
      attack=attack,
  )


def client_bits(config: ml_collections.ConfigDict, shapes) -> tuple[int, int]:
  """``(up, down)``: the bits one sampled client uploads (its compressed update and the
  algorithm's extra uploads) and downloads (the model) in a round, exact from ``shapes``
  (the model's variables); ``(0, 0)`` for an algorithm that sends nothing."""
  entry = registry.get(config.algorithm.name)
  if not entry.communicates:
    return 0, 0
  up = compression.upload_bits(make_compressor(config), shapes)
  up += entry.extra_uploads * compression.upload_bits(None, shapes)
  return up, compression.model_bits(shapes)


def make_partition(config: ml_collections.ConfigDict, labels: np.ndarray) -> partition.Partition:
  """The partition of the training labels that ``config.partition`` describes.

  Multi-label ``[N, L]`` labels are dealt by their ``partition.label_summary``
  (no finding, or the example's rarest finding) where the kind skews labels.
  """
  p = config.partition
  return partition.make_partition(
      p.kind, labels, config.fl.num_clients, config.seed, alpha=p.alpha, min_size=p.min_size,
      shards_per_client=p.shards_per_client, quantity_kind=p.quantity_kind,
      quantity_sigma=p.quantity_sigma, power_exponent=p.power_exponent,
      dirichlet_method=p.dirichlet_method,
  )


def make_compressor(config: ml_collections.ConfigDict) -> compression.Compressor | None:
  """The upload compressor of ``config.comm`` (None for ``"none"``)."""
  c = config.comm
  return compression.make(c.compressor, bits=c.bits, fraction=c.fraction, block=c.block,
                          error_feedback=c.error_feedback)


def swa_start_round(config: ml_collections.ConfigDict) -> int:
  """First averaged round: the last ``algorithm.swa_fraction`` of ``fl.rounds``."""
  rounds = config.fl.rounds
  return max(1, rounds - int(round(config.algorithm.swa_fraction * rounds)) + 1)


def make_server_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """``fl.server_opt`` at ``fl.server_lr`` (constant, cosine, or SWA's cyclical schedule)."""
  fl, a = config.fl, config.algorithm
  lr: float | Callable = fl.server_lr
  if fl.server_lr_schedule == "cosine":
    lr = optax.cosine_decay_schedule(fl.server_lr, fl.rounds, alpha=fl.server_lr_min_ratio)
  if a.swa:  # the cyclical SWA schedule replaces any other
    lr = algorithms.cyclical_lr(fl.server_lr, fl.server_lr * a.swa_lr_ratio,
                                start_round=swa_start_round(config), period=a.swa_period)
  return optimizers.server(fl.server_opt, lr, fl.server_momentum, fl.server_eps)


def personal_layers(config: ml_collections.ConfigDict) -> Callable | None:
  """``is_local(path)`` of the layers each client keeps (``personal.layers``, else the
  algorithm's default: FedBN's BatchNorm leaves, the model's head for FedPer and FedRep);
  ``None`` for algorithms that keep no layers."""
  kind = registry.get(config.algorithm.name).personal
  if not kind:
    return None
  if config.personal.layers:
    return algorithms.personal.matcher(config.personal.layers)
  if kind == "head":
    return algorithms.personal.matcher(models.head_pattern(config.model.name))
  return algorithms.is_batchnorm_leaf


def make_algorithm(
    config: ml_collections.ConfigDict, loss_fn: types.LossFn, plan: algorithms.RoundPlan
) -> types.FederatedAlgorithm:
  """The ``(init, round)`` pair that the resolved ``config.algorithm`` names."""
  fl, a = config.fl, config.algorithm
  name = a.name
  entry = registry.get(name)
  client_tx = optimizers.client(fl.client_lr, fl.client_momentum, fl.client_weight_decay,
                                fl.client_opt)
  hparams = {k: a[name][k] for k in entry.hparams}
  alg = registry.build(name, loss_fn, client_tx, make_server_optimizer(config), plan=plan,
                       client_lr=fl.client_lr if entry.takes_client_lr else None,
                       is_local=personal_layers(config), **hparams)
  if a.swa:
    alg = algorithms.swa(alg, start_round=swa_start_round(config), period=a.swa_period)
  return alg


def build(config: ml_collections.ConfigDict) -> Experiment:
  """Resolves and validates ``config`` and builds the experiment (writes nothing).

  Raises:
    ConfigError / DataError: bad input.
  """
  config = config_lib.resolve(config)
  config_lib.validate(config)
  ds = data.load(config.data.name, root=config.data.root or data.default_root(),
                 size=config.data.size, download=config.data.download,
                 verify_md5=config.data.verify_md5)
  part = make_partition(config, ds.train.labels)
  if config.partition.site_shift > 0:  # each client's training images through its "scanner"
    shifted = site_shift.apply(ds.train.images, part, config.partition.site_shift, config.seed)
    ds = dataclasses.replace(ds, train=ds.train._replace(images=shifted))
  # Every site keeps a seeded share of its own data as its local test set.
  sites = holdout.split(part, config.eval.site_holdout, config.seed)
  federated = registry.get(config.algorithm.name).federated
  train_part = sites.train
  if not federated:  # the baseline pools every site's training share into one "client"
    train_part = partition.Partition.from_lists([sites.train.indices])
  fl = config.fl
  eng = make_engine(config)
  model = models.get_model(config.model.name, ds.num_classes, conv_impl=eng.conv_impl,
                           norm=config.model.norm)
  loss_fn = tasks.make_loss_fn(model, augment=config.data.augment, multi_label=ds.multi_label)
  local_steps = fl.local_steps
  if fl.local_epochs > 0:  # S fixed for the run (compile once); small clients pad
    local_steps = batching.epoch_steps(train_part.sizes, fl.batch_size, fl.local_epochs)
    log.info("%g local epochs: S = %d steps (largest client)", fl.local_epochs, local_steps)
  privacy_plan = None
  if config.privacy.level != "none":
    from fedjax_med.privacy import plan as privacy_plan_lib  # the optional extra

    privacy_plan = privacy_plan_lib.make(config, train_part, local_steps)
  attack = algorithms.attacks.make(config.attack.kind, fl.num_clients, config.attack.fraction,
                                   config.seed, config.attack.scale, ds.num_classes,
                                   multi_label=ds.multi_label)
  if attack is not None:
    log.info("attack %s (scale %g): malicious clients %s", attack.kind, attack.scale,
             list(attack.malicious))
  plan = make_plan(config, eng, privacy_plan=privacy_plan, attack=attack)
  image_bytes = int(np.prod(ds.image_shape)) * ds.train.images.dtype.itemsize
  step_slots = privacy_plan.capacity if privacy_plan and privacy_plan.level == "record" else (
      fl.batch_size)
  round_clients = (privacy_plan.capacity if privacy_plan and privacy_plan.level == "client" else
                   fl.clients_per_round)
  config_lib.check_batch_bytes(
      "fl.local_epochs" if fl.local_epochs > 0 else "fl.batch_size",
      fl.local_epochs or fl.batch_size,
      round_clients * local_steps * step_slots * image_bytes)
  config_lib.check_batch_bytes("eval.batch_size", config.eval.batch_size,
                               config.eval.batch_size * image_bytes)
  config_lib.check_batch_bytes("personal.finetune_steps", config.personal.finetune_steps,
                               config.personal.finetune_steps * fl.batch_size * image_bytes)
  evaluator = evaluation.Evaluator(model, ds, sites.test, batch_size=config.eval.batch_size)
  # Bytes on the wire per round, exact from the shapes and dtypes sent: every
  # sampled client downloads the model and uploads its (compressed) update.
  shapes = jax.eval_shape(functools.partial(tasks.init_variables, model,
                                            image_shape=ds.image_shape), jax.random.PRNGKey(0))
  up, down = (fl.clients_per_round * b // 8 for b in client_bits(config, shapes))
  if privacy_plan is not None and privacy_plan.level == "record" and "batch_stats" in shapes:
    raise errors.ConfigError(
        f"invalid --config.model.name={config.model.name!r} with --config.privacy.level=record: "
        "its BatchNorm mixes the examples of a batch, so DP-SGD's per-example gradients do not "
        "exist; use a model without BatchNorm (cnn, or model.norm=group / layer)")
  # The stack has a row per client slot of the round (clients_per_round; the loop may pad
  # it further to a multiple of the devices and the chunk).
  # (a model-poisoning attack stacks them under the mean too)
  stacked_bytes = algorithms.aggregators.stacked_delta_bytes(
      algorithms.aggregators.stacked_mean() if attack and attack.poisons_updates
      else plan.aggregator,
      round_clients, shapes)
  exp = Experiment(config, ds, train_part, sites, eng, model, loss_fn, plan,
                   make_algorithm(config, loss_fn, plan), federated, local_steps, evaluator,
                   up, down, privacy_plan, stacked_bytes)
  try:  # trace init now (shapes only): what the model cannot do is an input error
    jax.eval_shape(exp.initial_state)
  except ValueError as e:
    raise errors.ConfigError(
        f"invalid --config.algorithm.name={config.algorithm.name!r} with --config.model.name="
        f"{config.model.name!r}: {e}") from None
  return exp
