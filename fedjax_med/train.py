"""``train_and_evaluate(config, workdir)``: the one training loop.

Everything a run needs comes from ``experiment.build(config)``; this module only
loops: sample clients and build the padded ``ClientBatch`` (prefetched one
round ahead), call the jitted round, log, evaluate, checkpoint, summarize.
Federated and centralized runs go through the same loop; only the algorithm
(an ``(init, round)`` pair) and the partition differ.

Workdir layout: ``config.json`` (resolved config), ``partition.json``
(per-client sizes and label histograms), ``metrics.jsonl`` (one record per
train round / eval), ``summary.json`` (at the end), ``checkpoints/``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fedjax_med import (
  batching,
  checkpoint,
  experiment,
  finetune,
  metrics,
  partition,
  sharding,
  types,
)
from fedjax_med import config as config_lib
from fedjax_med import workdir as workdir_lib
from fedjax_med.algorithms import client_store, registry
from fedjax_med.configs import base as base_config
from fedjax_med.errors import NonFiniteLossError
from fedjax_med.progress import Progress

log = logging.getLogger(__name__)


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, fresh: bool = False
) -> types.ServerState:
  """Trains per ``config``, writing logs and checkpoints to ``workdir``; resumes from it.

  A workdir holding a run of another config is refused (``workdir.check_identity``)
  unless ``fresh``, which deletes that run first; the workdir is locked for the run.

  Raises:
    ConfigError / DataError / WorkdirError: bad input (nothing written to ``workdir`` yet).
    NonFiniteLossError: the loss diverged; the last good checkpoint is kept.
  """
  t_start = time.time()
  exp = experiment.build(config)
  if not fresh:
    workdir_lib.check_identity(workdir, exp.config.to_dict(), base_config.get_config().to_dict())
  with workdir_lib.Lock(workdir):
    if fresh:
      workdir_lib.clear(workdir)
    return _train(exp, workdir, t_start)


def _train(exp: experiment.Experiment, workdir: str, t_start: float) -> types.ServerState:
  config, ds, fl = exp.config, exp.dataset, exp.config.fl
  metrics.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
  metrics.write_json_atomic(
      os.path.join(workdir, "partition.json"),
      {**partition.summarize(exp.sites.train, ds.train.labels, ds.num_classes),
       "held_out_sizes": exp.sites.test.sizes.tolist()},
  )
  state = exp.initial_state()
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.ckpt.keep)
  writer = metrics.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
  if ckpt.latest_round() is not None:
    state = ckpt.restore(state)
    log.info("resumed from %s at round %d", ckpt.directory, int(state.round))
  start = int(state.round)
  writer.truncate_after(start)
  mesh = sharding.make_mesh()
  state = sharding.replicate(state, mesh)
  padded_clients = sharding.pad_multiple(exp.round_clients, mesh, exp.engine.client_chunk_size)
  dp = exp.privacy
  # The last round: fl.rounds, or earlier where the next round would pass privacy.max_epsilon.
  end = fl.rounds if dp is None else dp.last_round

  def comm_bytes(rounds_done: int) -> dict:
    spent = {} if dp is None else {"epsilon": float(dp.epsilon[rounds_done])}
    return {"bytes_up": rounds_done * exp.bytes_up_per_round,
            "bytes_down": rounds_done * exp.bytes_down_per_round, **spent}

  def evaluate(params, round_idx: int, extra: dict | None = None) -> dict:
    results = exp.evaluator.splits(params)
    for split, res in results.items():
      res.update(round=round_idx, split=split, **(extra or {}))
      if extra is not None:
        record(res)
        if split == "val":
          checkpoint.kill_point("eval", round_idx)  # test hook; no-op unless set
    log.info("round %d: val acc %.4f auc %.4f | test acc %.4f auc %.4f", round_idx,
             results["val"]["accuracy"], results["val"]["auc"],
             results["test"]["accuracy"], results["test"]["auc"])
    return results

  prefetcher = batching.Prefetcher(functools.partial(exp.make_batch, pad_clients_to=padded_clients),
                                   stop=end)
  round_fn = sharding.jit_round(exp.algorithm.round, mesh)
  diagnose = exp.algorithm.diagnostics and jax.jit(exp.algorithm.diagnostics)
  state_finite = jax.jit(_all_finite)
  analysis_fn = _make_analysis_fn(config, exp.model, ds)
  progress = Progress(end, mode=config.log.progress, unit="round", initial=start)
  events = metrics.EventWriter(os.path.join(workdir, "tensorboard"))
  events.text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")

  def record(rec: dict) -> None:  # metrics.jsonl and TensorBoard
    writer.write(rec)
    events.write(rec)

  if start < end:
    log.info("compiling the round (%s, %d clients a round)...", config.algorithm.name,
             fl.clients_per_round)
  first_round_s = None
  try:
    for r in range(start, end):
      host_batch = prefetcher.get(r)
      batch = sharding.shard_clients(host_batch, mesh)
      with jax.transfer_guard_host_to_device("disallow"):
        state, round_metrics = round_fn(state, batch)
      m = jax.device_get(round_metrics)
      drops = _drops(exp, r, host_batch, m)
      train_loss = _mean_loss(m, drops)
      if first_round_s is None:
        first_round_s = time.time() - t_start
        log.info("first round done %.1f s after start (compile included)", first_round_s)
      if drops["all_dropped"]:
        log.warning("round %d: every one of the %d sampled clients dropped out or failed "
                    "(%d failed: a non-finite loss or update; if every round fails, lower "
                    "fl.client_lr); the round changes nothing%s", r + 1,
                    drops["dropped_clients"], drops["failed_clients"],
                    " but the DP noise" if exp.plan.client_dp is not None else "")
      # Clients whose loss or update was non-finite were dropped in the round (a round
      # where every client failed changes nothing, is logged above and the run goes on).
      # The loss is measured before each step: check the new global state too, so that a
      # non-finite model is never evaluated or saved; that stops the run.
      what = None if bool(state_finite(state)) else "model or optimizer state"
      if what:
        last = ckpt.latest_round()
        kept = (f"The last good checkpoint (round {last}) is kept in {ckpt.directory}."
                if last is not None else "No checkpoint had been saved yet.")
        raise NonFiniteLossError(
            f"non-finite {what} in round {r + 1}; stopped. {kept} Lower --config.fl.client_lr "
            "or --config.fl.server_lr and rerun with --fresh or in a new workdir."
        )
      real = (host_batch.weight > 0) & ~drops["failed"]
      record({
          "round": r + 1,
          "split": "train",
          "loss": train_loss,
          "dropped_clients": drops["dropped_clients"],
          "failed_clients": drops["failed_clients"],
          **({"all_dropped": True} if drops["all_dropped"] else {}),
          # reporting malicious clients of the round (config.attack)
          **({"malicious_clients": int(np.isin(host_batch.client_id[real],
                                               exp.plan.attack.malicious).sum())}
             if exp.plan.attack is not None else {}),
          "update_norm": float(np.mean(m.update_norm[real])) if real.any() else 0.0,
          "pseudo_grad_norm": float(m.pseudo_grad_norm),
          **comm_bytes(r + 1),
          # the round's client lr, when a schedule changes it (fl.client_lr_schedule / warmup)
          **({"client_lr": _client_lr(exp, r)} if exp.plan.client_lr_scale is not None
             else {}),
          **({k: float(v) for k, v in jax.device_get(diagnose(state)).items()} if diagnose
             else {}),
          **({k: float(v) for k, v in m.privacy.items()} if m.privacy is not None else {}),
      })
      progress.update(r + 1, "all clients dropped" if train_loss is None else
                      f"train loss {train_loss:.4f}")
      done = r + 1 == end
      if (r + 1) % config.eval.every == 0 or done:
        evaluate(state.params, r + 1,
                 {**comm_bytes(r + 1), "elapsed_s": round(time.time() - t_start, 3)})
      if analysis_fn is not None and ((r + 1) % config.analysis.every == 0 or done):
        record({"round": r + 1, "split": "analysis",
                **_stability(analysis_fn(state.params, r + 1), _client_lr(exp, r)),
                **({} if dp is None else {"epsilon": float(dp.epsilon[r + 1])})})
      if (r + 1) % config.ckpt.every == 0 or done:
        ckpt.save(state)
  finally:
    progress.close()
    prefetcher.close()
    events.close()

  records = metrics.read_jsonl(writer.path)
  final = {}
  for split in ("val", "test"):
    last = [x for x in records if x["split"] == split and x["round"] == end]
    if not last:  # resumed an already finished run: evaluate again
      last = [evaluate(state.params, end)[split]]
    final[split] = {k: last[-1][k] for k in ("loss", "accuracy", "auc")}
  sites = _site_results(exp, state, end)
  target = config.comm.target_accuracy
  reached = [x["round"] for x in records if x["split"] == "test" and x["accuracy"] >= target]
  summary = {
      "rounds_completed": int(state.round),
      "algorithm": config.algorithm.name,
      "dataset": config.data.name,
      "model": config.model.name,
      "num_clients": fl.num_clients,
      "clients_per_round": fl.clients_per_round,
      "heterogeneity": partition.heterogeneity(exp.sites.train, ds.train.labels, ds.num_classes),
      "local_steps": exp.local_steps,
      "sample_gradients_per_round": fl.clients_per_round * exp.local_steps * fl.batch_size,
      "wall_time_s": time.time() - t_start,
      "time_to_first_round_s": first_round_s,
      "engine": exp.engine._asdict(),
      "compressor": config.comm.compressor,
      "aggregator": {"name": config.aggregator.name,
                     "stacked_delta_bytes": exp.stacked_delta_bytes},
      "attack": None if exp.plan.attack is None else {
          "kind": exp.plan.attack.kind, "fraction": config.attack.fraction,
          "scale": exp.plan.attack.scale, "malicious": list(exp.plan.attack.malicious)},
      "total_bytes_up": comm_bytes(end)["bytes_up"],
      "total_bytes_down": comm_bytes(end)["bytes_down"],
      # clients that dropped out (fl.dropout_rate) or failed (non-finite result), all rounds
      **_drop_totals(records),
      "target_accuracy": target,
      "rounds_to_target": reached[0] if reached else None,
      "bytes_up_to_target": comm_bytes(reached[0])["bytes_up"] if reached else None,
      **final,
      "selected": select(records, config.eval.select_on),
      # each site's held-out share: "sites" with the model it would use (its own where the
      # algorithm keeps one), "sites_global" the global model beside a personal one,
      # "sites_finetuned" after personal.finetune_steps on its own data
      **sites,
      # per-client state held for the whole federation (personal models, control variates)
      "client_store_bytes": (0 if _client_store(state) is None
                             else client_store.nbytes(_client_store(state))),
      **({} if dp is None else {"privacy": dp.summary(end, jax.device_get(
          getattr(state, "inner", state).privacy))}),  # SWA wraps the state
  }
  checkpoint.kill_point("summary", int(state.round))  # test hook; no-op unless set
  metrics.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  ckpt.close()
  log.info("test accuracy %.4f, AUC %.4f", final["test"]["accuracy"], final["test"]["auc"])
  return state


def _client_store(state) -> types.ClientState | None:
  return getattr(state, "inner", state).client_state  # SWA wraps the state


def _site_results(exp: experiment.Experiment, state, rounds: int) -> dict:
  """``sites`` (and ``sites_global``, ``sites_finetuned`` where they apply) of summary.json.

  A site that never trained (partial participation) is tested with the global model
  (or one fine-tuned from it) and summarized apart (``never_sampled``); so are the
  ``local`` baseline's, with their own untrained model (there is no global one).
  """
  entry = registry.get(exp.config.algorithm.name)
  took_part = exp.participants(rounds)
  own = exp.algorithm.client_params
  host = jax.device_get(state) if own is not None else None
  global_params = state.params
  has_global = entry.communicates or not entry.federated  # local has no global model

  def personal_model(c: int):
    if own is None or (not took_part[c] and has_global):
      return global_params
    return own(host, c)

  name = "global" if own is None else "each site's own"
  out = {"sites": exp.evaluator.sites(personal_model, took_part, model=name)}
  if own is not None and has_global:
    out["sites_global"] = exp.evaluator.sites(lambda c: global_params, took_part)
  steps = exp.config.personal.finetune_steps
  if steps:
    tune = finetune.make_finetune_fn(exp, rounds)
    out["sites_finetuned"] = exp.evaluator.sites(
        lambda c: tune(personal_model(c), c), took_part,
        model=f"{name}, fine-tuned {steps} steps on the site's own data")
  return out


SCALARS = ("loss", "accuracy", "balanced_accuracy", "auc")


def select(records: list[dict], metric: str) -> dict:
  """Model selection on validation, from the evaluation records of ``metrics.jsonl``.

  ``best_val``: the evaluation with the best validation ``metric`` (the
  earliest on ties) and its test metrics; ``last3``: the mean of the last three
  evaluations (val and test). Test metrics never take part in the choice.
  """
  larger = config_lib.SELECT_ON[metric]
  val = {r["round"]: r for r in records if r["split"] == "val"}
  test = {r["round"]: r for r in records if r["split"] == "test"}
  rounds = sorted(set(val) & set(test))
  def score(r: int) -> float:  # an undefined value (null: NaN AUC) never wins
    v = val[r].get(metric)
    return -math.inf if v is None else (v if larger else -v)

  best = max(rounds, key=lambda r: (score(r), -r))
  last = rounds[-3:]

  def at(rs: dict, r: int) -> dict:
    return {k: rs[r][k] for k in SCALARS if k in rs[r]}

  def mean(rs: dict) -> dict:
    return {k: float(np.mean([rs[r][k] for r in last]))
            for k in SCALARS if all(rs[r].get(k) is not None for r in last)}

  return {
      "metric": metric,
      "best_val": {"round": best, "val": at(val, best), "test": at(test, best)},
      "last3": {"rounds": last, "val": mean(val), "test": mean(test)},
  }


def _all_finite(tree) -> jax.Array:
  """True if every floating leaf of ``tree`` is finite (params, optimizer and client state)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _drops(exp: experiment.Experiment, round_idx: int, batch: types.ClientBatch,
           m: types.RoundMetrics) -> dict:
  """Who did not count in round ``round_idx``: ``dropped_out`` [C] (host-side dropout),
  ``failed`` [C] (non-finite result, from the round), their total ``dropped_clients``,
  ``failed_clients``, and ``all_dropped`` (sampled clients, none of them counted)."""
  ids = np.asarray(batch.client_id)
  out, _ = exp.failures(round_idx, ids)
  failed = np.zeros(ids.shape, bool) if m.dropped is None else np.asarray(m.dropped, bool)
  dropped = out | failed
  sampled = ids >= 0
  return {"dropped_out": out, "failed": failed, "dropped_clients": int(dropped.sum()),
          "failed_clients": int(failed.sum()),
          "all_dropped": bool(sampled.any() and not (sampled & ~dropped).any())}


def _mean_loss(m: types.RoundMetrics, drops: dict | None = None) -> float | None:
  """The mean step loss of the clients that counted: None if none of the sampled clients
  counted (all dropped out or failed: the round changed nothing), 0 with no client."""
  loss, steps = np.asarray(m.client_loss), np.asarray(m.client_steps)
  if drops is not None:
    counted = ~(drops["dropped_out"] | drops["failed"])
    loss, steps = loss[counted], steps[counted]
    if drops["all_dropped"]:
      return None
  if steps.sum() == 0:
    return 0.0
  return float(loss.sum() / steps.sum())


def _drop_totals(records: list[dict]) -> dict:
  """summary.json: dropped and failed clients over the train records of the run."""
  train = [x for x in records if x["split"] == "train"]
  return {"dropped_clients": sum(x.get("dropped_clients", 0) for x in train),
          "failed_clients": sum(x.get("failed_clients", 0) for x in train),
          "all_dropped_rounds": sum(1 for x in train if x.get("all_dropped"))}


def _client_lr(exp: experiment.Experiment, round_: int) -> float:
  """The client learning rate of round ``round_`` (0-based), schedule included."""
  scale = exp.plan.client_lr_scale
  return exp.config.fl.client_lr * (1.0 if scale is None else float(scale(round_)))


def _stability(measured: dict, lr: float) -> dict:
  """Adds ``stability_ratio`` = lambda_max * lr / 2 at this round's client lr: (S)GD at lr
  is stable along the top Hessian direction only while it is < 1 (2 / lr, the edge of
  stability of Cohen et al. 2021; for AdamW the bound is on the preconditioned Hessian)."""
  lam = measured.get("lambda_max")
  if lam is None or not np.isfinite(lam):
    return measured
  return {**measured, "stability_ratio": float(lam) * lr / 2.0}


def _make_analysis_fn(config: ml_collections.ConfigDict, model, ds):
  """``fn(variables, round) -> dict`` of sharpness metrics (``config.analysis``), or None if off."""
  a = config.analysis
  if not a.every:
    return None
  # Imported here: only runs that log sharpness pay for it.
  from fedjax_med.analysis import measures, runs

  images, labels = runs.eval_subset(ds, a.split, a.examples, config.seed)
  options = measures.SharpnessOptions(
      batch_size=a.batch_size, lanczos_iters=a.lanczos_iters, lanczos_tol=a.lanczos_tol, top_k=1,
      probes=a.probes, eps=a.eps, m=a.m, rho=a.rho,
  )
  return measures.make_round_metrics_fn(model, images, labels, options, seed=config.seed)
