"""``train_and_evaluate(config, workdir)``: the one training loop.

Federated and centralized runs go through the same loop; only the algorithm
(an ``(init, round)`` pair) and the partition differ. The loop is host-side:
sample clients, build the padded ``ClientBatch`` (prefetched one round ahead),
call the jitted round, log, evaluate, checkpoint.

Workdir layout: ``config.json`` (resolved config), ``partition.json``
(per-client sizes and label histograms), ``metrics.jsonl`` (one record per
train round / eval), ``summary.json`` (at the end), ``checkpoints/``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from fedjax_med import (
  batching,
  builders,
  checkpoint,
  client_eval,
  compression,
  data,
  engine,
  metrics,
  models,
  partition,
  sharding,
  tasks,
  types,
)
from fedjax_med import config as config_lib
from fedjax_med.algorithms.fedbn import client_params as fedbn_client_params
from fedjax_med.data import site_shift
from fedjax_med.errors import NonFiniteLossError

log = logging.getLogger(__name__)


def make_partition(config: ml_collections.ConfigDict, labels: np.ndarray) -> partition.Partition:
  p = config.partition
  return partition.make_partition(
      p.kind,
      labels,
      config.fl.num_clients,
      config.seed,
      alpha=p.alpha,
      min_size=p.min_size,
      shards_per_client=p.shards_per_client,
      quantity_kind=p.quantity_kind,
      quantity_sigma=p.quantity_sigma,
      power_exponent=p.power_exponent,
      dirichlet_method=p.dirichlet_method,
  )


def predict_probs(predict_fn, params, images: np.ndarray, batch_size: int) -> np.ndarray:
  """Class probabilities [N, classes] of ``params`` on ``images`` (fixed-size padded batches)."""
  return _predict(predict_fn, params, images, np.zeros(len(images), np.int32), batch_size)[1]


def _predict(predict_fn, params, images, labels, batch_size):
  n = len(labels)
  collected, probs = None, []
  for start in range(0, n, batch_size):
    x = images[start : start + batch_size]
    y = labels[start : start + batch_size]
    real = len(y)
    pad = batch_size - real
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros((pad,), y.dtype)])
    mask = np.arange(batch_size) < real
    batch_metrics, batch_probs = predict_fn(params, *jax.device_put((x, y, mask)))
    collected = batch_metrics if collected is None else collected.merge(batch_metrics)
    probs.append(np.asarray(jax.device_get(batch_probs))[:real])
  return collected, np.concatenate(probs)


def evaluate(predict_fn, params, split: data.Split, batch_size: int) -> dict:
  """Loss, accuracy and ROC-AUC of ``params`` on a whole split (fixed-size padded batches)."""
  collected, probs = _predict(predict_fn, params, split.images, split.labels, batch_size)
  result = {k: float(v) for k, v in collected.compute().items()}
  result["auc"] = metrics.auc(probs, split.labels)
  return result


def _make_eval_fn(model):
  predict = tasks.make_predict_fn(model)

  @jax.jit
  def eval_fn(params, images, labels, mask):
    logits = predict(params, images)
    return metrics.eval_batch_metrics(logits, labels, mask), jax.nn.softmax(logits)

  return eval_fn


class _Progress:
  """A tqdm bar on a terminal, else a log line every ~10% of the run."""

  def __init__(self, mode: str, total: int, initial: int):
    self.total, self.bar = total, None
    if mode == "auto":
      mode = "bar" if sys.stderr.isatty() else "lines"
    self.mode = mode
    self.every = max(1, total // 10)
    if mode == "bar":
      import tqdm

      self.bar = tqdm.tqdm(total=total, initial=initial, unit="round", dynamic_ncols=True)

  def update(self, round_idx: int, loss: float) -> None:
    if self.bar is not None:
      self.bar.set_postfix(loss=f"{loss:.4f}")
      self.bar.update(1)
    elif self.mode == "lines" and (round_idx % self.every == 0 or round_idx == self.total):
      log.info("round %d/%d  train loss %.4f", round_idx, self.total, loss)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class Experiment(NamedTuple):
  """Everything a run is built from, before any output is written."""

  dataset: data.Dataset
  partition: partition.Partition
  engine: engine.Engine
  model: Any  # flax module
  algorithm: types.FederatedAlgorithm


def build(config: ml_collections.ConfigDict) -> Experiment:
  """Validates ``config`` and builds data, partition, engine, model and algorithm.

  Raises:
    ConfigError / DataError: bad input.
  """
  config_lib.validate(config)
  ds = data.load(
      config.data.name,
      root=config.data.root or data.default_root(),
      size=config.data.size,
      download=config.data.download,
      verify_md5=config.data.verify_md5,
  )
  part = make_partition(config, ds.train.labels)
  if config.partition.site_shift > 0:  # each client's training images through its "scanner"
    shifted = site_shift.apply(ds.train.images, part, config.partition.site_shift, config.seed)
    ds = dataclasses.replace(ds, train=ds.train._replace(images=shifted))
  eng = engine.choose(
      config.fl.clients_per_round,
      client_chunk_size=config.fl.client_chunk_size,
      conv_impl=config.model.conv_impl,
      local_unroll=config.fl.local_unroll,
  )
  model = models.get_model(
      config.model.name, ds.num_classes, conv_impl=eng.conv_impl, norm=config.model.norm
  )
  loss_fn = tasks.make_loss_fn(model, augment=config.data.augment)
  return Experiment(ds, part, eng, model, builders.make_algorithm(config, loss_fn, eng))


def initial_state(exp: Experiment, config: ml_collections.ConfigDict):
  """The algorithm's state at round 0 (also the template to restore checkpoints into)."""
  init_key, state_key = jax.random.split(jax.random.PRNGKey(config.seed))
  params = tasks.init_variables(exp.model, init_key, exp.dataset.image_shape)
  return exp.algorithm.init(params, state_key)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> types.ServerState:
  """Trains per ``config``, writing logs and checkpoints to ``workdir``; resumes from it.

  Raises:
    ConfigError / DataError: bad input (nothing written to ``workdir`` yet).
    NonFiniteLossError: the loss diverged; the last good checkpoint is kept.
  """
  t_start = time.time()
  exp = build(config)
  ds, part, eng, model, alg = exp
  fl = config.fl

  # Inputs are valid: only now touch the workdir.
  os.makedirs(workdir, exist_ok=True)
  metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  metrics.write_json_atomic(
      os.path.join(workdir, "partition.json"),
      partition.summarize(part, ds.train.labels, ds.num_classes),
  )
  state = initial_state(exp, config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.ckpt.keep)
  writer = metrics.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
  if ckpt.latest_round() is not None:
    state = ckpt.restore(state)
    log.info("resumed from %s at round %d", ckpt.directory, int(state.round))
  start = int(state.round)
  writer.truncate_after(start)
  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  padded_clients = sharding.pad_multiple(fl.clients_per_round, mesh, eng.client_chunk_size)
  local_steps = fl.local_steps
  if fl.local_epochs > 0:  # S fixed for the run (compile once); small clients pad
    local_steps = batching.epoch_steps(part.sizes, fl.batch_size, fl.local_epochs)
    log.info("%g local epochs: S = %d steps (largest client)", fl.local_epochs, local_steps)

  make_batch = functools.partial(
      _round_batch,
      config=config,
      images=ds.train.images,
      labels=ds.train.labels,
      part=part,
      pad_clients_to=padded_clients,
      local_steps=local_steps,
  )
  # Bytes on the wire per round, exact from the shapes and dtypes sent: every
  # sampled client downloads the model and uploads its (compressed) update.
  server_params = jax.device_get(state.params)
  if config.algorithm.name == "centralized":
    up_per_round = down_per_round = 0
  else:
    up_per_round = fl.clients_per_round * compression.upload_bits(
        builders.make_compressor(config), server_params) // 8
    down_per_round = fl.clients_per_round * compression.model_bits(server_params) // 8

  def comm_bytes(rounds_done: int) -> dict:
    return {"bytes_up": rounds_done * up_per_round, "bytes_down": rounds_done * down_per_round}

  prefetcher = batching.Prefetcher(make_batch, stop=fl.rounds)
  round_fn = sharding.jit_round(alg.round, mesh)
  eval_fn = _make_eval_fn(model)
  analysis_fn = _make_analysis_fn(config, model, ds)
  progress = _Progress(config.log.progress, fl.rounds, start)
  first_round_s = None
  try:
    for r in range(start, fl.rounds):
      host_batch = prefetcher.get(r)
      batch = sharding.shard_clients(host_batch, mesh)
      with jax.transfer_guard_host_to_device("disallow"):
        state, round_metrics = round_fn(state, batch)
      m = jax.device_get(round_metrics)
      train_loss = _mean_loss(m)
      if first_round_s is None:
        first_round_s = time.time() - t_start
      if not math.isfinite(train_loss):
        raise NonFiniteLossError(
            f"non-finite training loss ({train_loss}) in round {r + 1}; stopped. The last good "
            f"checkpoint (round {ckpt.latest_round()}) is kept in {ckpt.directory}. Lower "
            "--config.fl.client_lr or --config.fl.server_lr and rerun in a new workdir."
        )
      real = host_batch.weight > 0
      writer.write({
          "round": r + 1,
          "split": "train",
          "loss": train_loss,
          "update_norm": float(np.mean(m.update_norm[real])) if real.any() else 0.0,
          "pseudo_grad_norm": float(m.pseudo_grad_norm),
          **comm_bytes(r + 1),
      })
      progress.update(r + 1, train_loss)
      done = r + 1 == fl.rounds
      if (r + 1) % config.eval.every == 0 or done:
        _evaluate_and_log(eval_fn, state.params, ds, config.eval.batch_size, r + 1, writer,
                          {**comm_bytes(r + 1), "elapsed_s": round(time.time() - t_start, 3)})
      if analysis_fn is not None and ((r + 1) % config.analysis.every == 0 or done):
        writer.write({"round": r + 1, "split": "analysis", **analysis_fn(state.params, r + 1)})
      if (r + 1) % config.ckpt.every == 0 or done:
        ckpt.save(state)
  finally:
    progress.close()
    prefetcher.close()

  final = {}
  records = metrics.read_jsonl(writer.path)
  for split in ("val", "test"):
    last = [x for x in records if x["split"] == split and x["round"] == fl.rounds]
    if not last:  # resumed an already finished run: evaluate again
      last = [_evaluate_and_log(eval_fn, state.params, ds, config.eval.batch_size, fl.rounds,
                                None)[split]]
    final[split] = {k: last[-1][k] for k in ("loss", "accuracy", "auc")}
  clients = None
  if config.algorithm.name != "centralized":
    bs = config.eval.batch_size
    client_predict = None
    if hasattr(state, "local_norms"):  # FedBN: each client with its own BatchNorm layers
      norms = jax.device_get(state.local_norms)
      client_predict = lambda c, x: predict_probs(  # noqa: E731
          eval_fn, fedbn_client_params(state.params, norms, c), x, bs)
    clients = client_eval.summarize(client_eval.client_accuracies(
        lambda x: predict_probs(eval_fn, state.params, x, bs),
        ds.test.images, ds.test.labels, part, ds.train.labels, ds.num_classes,
        site_shift_strength=config.partition.site_shift, seed=config.seed,
        client_predict=client_predict,
    ))
    clients["model"] = "local BatchNorm per client" if client_predict else "global"
  target = config.comm.target_accuracy
  reached = [x["round"] for x in records if x["split"] == "test" and x["accuracy"] >= target]
  summary = {
      "rounds_completed": int(state.round),
      "algorithm": config.algorithm.name,
      "dataset": config.data.name,
      "model": config.model.name,
      "num_clients": fl.num_clients,
      "clients_per_round": fl.clients_per_round,
      "local_steps": local_steps,
      "sample_gradients_per_round": fl.clients_per_round * local_steps * fl.batch_size,
      "wall_time_s": time.time() - t_start,
      "time_to_first_round_s": first_round_s,
      "engine": eng._asdict(),
      "compressor": config.comm.compressor,
      "total_bytes_up": comm_bytes(fl.rounds)["bytes_up"],
      "total_bytes_down": comm_bytes(fl.rounds)["bytes_down"],
      "target_accuracy": target,
      "rounds_to_target": reached[0] if reached else None,
      "bytes_up_to_target": comm_bytes(reached[0])["bytes_up"] if reached else None,
      **final,
      "clients": clients,
  }
  metrics.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  ckpt.close()
  log.info("test accuracy %.4f, AUC %.4f", final["test"]["accuracy"], final["test"]["auc"])
  return state


def _mean_loss(m: types.RoundMetrics) -> float:
  steps = np.asarray(m.client_steps)
  if steps.sum() == 0:
    return 0.0
  return float(np.asarray(m.client_loss).sum() / steps.sum())


def _make_analysis_fn(config: ml_collections.ConfigDict, model, ds):
  """``fn(variables, round) -> dict`` of sharpness metrics (``config.analysis``), or None if off."""
  a = config.analysis
  if not a.every:
    return None
  # Imported here: only runs that log sharpness pay for it.
  from fedjax_med.analysis import report, runs

  images, labels = runs.eval_subset(ds, a.split, a.examples, config.seed)
  options = report.SharpnessOptions(
      batch_size=a.batch_size, lanczos_iters=a.lanczos_iters, lanczos_tol=a.lanczos_tol, top_k=1,
      probes=a.probes, eps=a.eps, m=a.m, rho=a.rho,
  )
  return report.make_round_metrics_fn(model, images, labels, options, seed=config.seed)


def _round_batch(
    round_idx, *, config, images, labels, part, pad_clients_to, local_steps
) -> types.ClientBatch:
  fl = config.fl
  client_ids = batching.sample_clients(fl.num_clients, fl.clients_per_round, config.seed, round_idx)
  return batching.make_client_batch(
      images,
      labels,
      part,
      client_ids,
      local_steps=local_steps,
      batch_size=fl.batch_size,
      seed=config.seed,
      round_idx=round_idx,
      pad_clients_to=pad_clients_to,
      local_epochs=fl.local_epochs or None,
  )


def _evaluate_and_log(eval_fn, params, ds, batch_size, round_idx, writer, extra=None) -> dict:
  results = {}
  for split in ("val", "test"):
    res = evaluate(eval_fn, params, ds.split(split), batch_size)
    res.update(round=round_idx, split=split, **(extra or {}))
    if writer is not None:
      writer.write(res)
    results[split] = res
  log.info(
      "round %d: val acc %.4f auc %.4f | test acc %.4f auc %.4f", round_idx,
      results["val"]["accuracy"], results["val"]["auc"],
      results["test"]["accuracy"], results["test"]["auc"],
  )
  return results
