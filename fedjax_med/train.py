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

import contextlib
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
  compile_cache,
  experiment,
  finetune,
  metrics,
  multihost,
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

  With ``config.runs.seeds = R > 1`` the R runs of seeds ``seed, ..., seed + R - 1``
  train together, vectorized in one compiled round (:func:`train_runs`), each in
  ``workdir/seed_<seed>``; the state of the last one is returned.

  Raises:
    ConfigError / DataError / WorkdirError: bad input (nothing written to ``workdir`` yet).
    NonFiniteLossError: the loss diverged; the last good checkpoint is kept.
  """
  seeds = config.runs.seeds if "runs" in config else 1
  if seeds != 1:
    config_lib.check_runs(config)
    configs = [run_config(config, config.seed + r) for r in range(seeds)]
    return train_runs(configs, [os.path.join(workdir, f"seed_{c.seed}") for c in configs],
                      fresh=fresh)[-1]
  return train_runs([config], [workdir], fresh=fresh)[0]


def run_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  """One run of a ``runs.seeds`` batch: ``config`` with ``seed`` and ``runs.seeds = 1``
  (the config a single run of that seed has: its ``config.json``)."""
  out = ml_collections.ConfigDict(config.to_dict())
  out.seed = seed
  out.runs.seeds = 1
  return out


def train_runs(configs: list[ml_collections.ConfigDict], workdirs: list[str], *,
               fresh: bool = False) -> list[types.ServerState]:
  """Trains runs that differ only in ``seed`` together: one compiled round over a leading
  run axis (``jax.vmap``), each run writing its own workdir exactly as a single run does.

  Every run's partition, client sampling, batches, keys and state are its own; run r
  equals the single run of its config to float tolerance (tests/vectorized_runs_test.py).
  With one config this is ``train_and_evaluate``. A run that diverges stops (its last good
  checkpoint kept); the others finish, then ``NonFiniteLossError`` names it.

  Raises:
    ConfigError: the configs differ in more than their seed, or use a feature whose round
      depends on the seed (``attack``), or their local steps differ (``fl.local_epochs``).
  """
  t_start = time.time()
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("train_runs: one workdir per config, at least one")
  if len(set(map(os.path.abspath, workdirs))) != len(workdirs):
    raise config_lib.ConfigError(f"train_runs: two runs share a workdir: {workdirs}")
  cache = compile_cache.setup(configs[0].get("compile_cache", "auto"))
  exps = [experiment.build(c) for c in configs]
  if len(exps) > 1:
    _check_vectorizable(exps)
  lead = multihost.is_lead()
  if not fresh:
    for exp, w in zip(exps, workdirs, strict=True):
      workdir_lib.check_identity(w, exp.config.to_dict(), base_config.get_config().to_dict())
  with contextlib.ExitStack() as stack:
    if lead:
      for w in workdirs:
        stack.enter_context(workdir_lib.Lock(w))
        if fresh:
          workdir_lib.clear(w)
    multihost.barrier("fedjax_med_workdir")
    return _train(exps, workdirs, t_start, cache)


def _check_vectorizable(exps: list[experiment.Experiment]) -> None:
  """Runs trained in one vmapped round must share everything but their seed."""
  first = exps[0].config.to_dict()
  for exp in exps[1:]:
    diff = workdir_lib.differences({**first, "seed": 0}, {**exp.config.to_dict(), "seed": 0})
    if diff:
      raise config_lib.ConfigError(
          f"runs vectorized together must differ only in seed; they differ in {diff[:5]}. "
          "Train them as separate runs.")
  if exps[0].privacy is not None:
    raise config_lib.ConfigError(
        "invalid --config.runs.seeds with --config.privacy.level: the noise calibration and "
        "the DP batch shapes depend on each seed's partition; run the seeds as separate runs "
        "(runs.seeds=1)")
  if exps[0].plan.attack is not None:
    raise config_lib.ConfigError(
        "invalid --config.runs.seeds with --config.attack.kind: the malicious clients are "
        "chosen per seed and fixed in the compiled round; run the seeds as separate runs "
        "(runs.seeds=1)")
  steps = {exp.local_steps for exp in exps}
  if len(steps) > 1 or len({exp.round_clients for exp in exps}) > 1:
    raise config_lib.ConfigError(
        f"invalid --config.runs.seeds: the seeds' partitions give different local steps "
        f"({sorted(steps)}, fl.local_epochs sets them from the largest client); set "
        "fl.local_steps instead of fl.local_epochs, or run the seeds separately")


class _Run:
  """One run's outputs in its workdir (written by the lead process only)."""

  def __init__(self, exp: experiment.Experiment, workdir: str, lead: bool, together: int):
    self.exp, self.workdir, self.lead = exp, workdir, lead
    self.together = together  # runs vectorized in this run's compiled round (1: alone)
    self.vectorized = together > 1
    self.compile: dict | None = None  # compilation cache use until the first round
    self.ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"),
                                        max_to_keep=exp.config.ckpt.keep)
    self.writer = metrics.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
    self.events = None
    self.diverged: str | None = None  # the error message, once the run diverged
    self.first_round_s: float | None = None

  def open(self) -> None:
    config, ds = self.exp.config, self.exp.dataset
    if not self.lead:
      return
    metrics.write_json_atomic(os.path.join(self.workdir, "config.json"), config.to_dict())
    metrics.write_json_atomic(
        os.path.join(self.workdir, "partition.json"),
        {**partition.summarize(self.exp.sites.train, ds.train.labels, ds.num_classes),
         "held_out_sizes": self.exp.sites.test.sizes.tolist()},
    )
    self.events = metrics.EventWriter(os.path.join(self.workdir, "tensorboard"))
    self.events.text("config", "```\n" + config.to_json_best_effort(indent=2) + "\n```")

  def record(self, rec: dict) -> None:  # metrics.jsonl and TensorBoard
    if self.lead:
      self.writer.write(rec)
      self.events.write(rec)

  def comm_bytes(self, rounds_done: int) -> dict:
    exp, dp = self.exp, self.exp.privacy
    spent = {} if dp is None else {"epsilon": float(dp.epsilon[rounds_done])}
    return {"bytes_up": rounds_done * exp.bytes_up_per_round,
            "bytes_down": rounds_done * exp.bytes_down_per_round, **spent}

  def evaluate(self, params, round_idx: int, extra: dict | None = None) -> dict:
    results = self.exp.evaluator.splits(params)
    for split, res in results.items():
      res.update(round=round_idx, split=split, **(extra or {}))
      if extra is not None:
        self.record(res)
        if split == "val":
          checkpoint.kill_point("eval", round_idx)  # test hook; no-op unless set
    log.info("%sround %d: val acc %.4f auc %.4f | test acc %.4f auc %.4f", self.tag, round_idx,
             results["val"]["accuracy"], results["val"]["auc"],
             results["test"]["accuracy"], results["test"]["auc"])
    return results

  @property
  def tag(self) -> str:
    return f"[seed {self.exp.config.seed}] " if self.vectorized else ""

  def close(self) -> None:
    if self.events is not None:
      self.events.close()
      self.events = None


def _view(tree, r: int | None):
  """Run ``r``'s slice of a state stacked on a leading run axis (``None``: not stacked)."""
  return tree if r is None else jax.tree.map(lambda x: x[r], tree)


def _stack(trees: list):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _restore(runs: list[_Run], state, stacked: bool):
  """Restores every run from its newest checkpoint, at the newest round all runs have.

  Runs of one batch are saved one after another: a kill between two saves leaves some
  runs a checkpoint ahead (or with a save cut short). All resume from the newest round
  every run has completely saved; later steps are deleted and saved again (the rounds
  are deterministic)."""
  if not stacked:
    if runs[0].ckpt.latest_round() is None:
      return state
    state = runs[0].ckpt.restore(state)
    log.info("resumed from %s at round %d", runs[0].ckpt.directory, int(state.round))
    return state
  complete = [set(run.ckpt.complete_steps()) for run in runs]
  shared = set.intersection(*complete)
  common = max(shared) if shared else 0
  if not any(complete):
    return state
  restored = []
  for r, run in enumerate(runs):
    run.ckpt.discard_after(common)
    template = _view(state, r)
    restored.append(template if common == 0 else run.ckpt.restore(template, step=common))
  rounds = {int(jax.device_get(x.round)) for x in restored}
  if len(rounds) != 1:  # cannot happen: every run restored step `common`
    raise checkpoint.CheckpointError(f"vectorized runs restored at different rounds {rounds}")
  log.info("resumed %d vectorized runs at round %d", len(runs), common)
  return _stack(restored)


def _train(exps: list[experiment.Experiment], workdirs: list[str], t_start: float,
           cache_dir: str | None) -> list[types.ServerState]:
  lead = multihost.is_lead()
  exp0 = exps[0]
  config, fl = exp0.config, exp0.config.fl
  stacked = len(exps) > 1
  runs = [_Run(exp, w, lead, len(exps)) for exp, w in zip(exps, workdirs, strict=True)]
  for run in runs:
    run.open()
  mesh = sharding.make_mesh()
  axis = 1 if stacked else 0  # the client axis of the batch (after the run axis)
  state = (_stack([exp.initial_state() for exp in exps]) if stacked
           else exp0.initial_state())
  # Placed on the mesh first: a checkpoint restores into the replicated layout (every
  # process then reads the arrays of its own devices).
  state = sharding.replicate(state, mesh)
  state = _restore(runs, state, stacked)
  start = int(jax.device_get(state.round[0] if stacked else state.round))
  if lead:
    for run in runs:
      run.writer.truncate_after(start)
  padded_clients = sharding.pad_multiple(exp0.round_clients, mesh, exp0.engine.client_chunk_size)
  dp = exp0.privacy
  # The last round: fl.rounds, or earlier where the next round would pass privacy.max_epsilon.
  end = fl.rounds if dp is None else dp.last_round

  prefetchers = [batching.Prefetcher(functools.partial(exp.make_batch,
                                                       pad_clients_to=padded_clients), stop=end)
                 for exp in exps]
  round_fn = sharding.jit_round(jax.vmap(exp0.algorithm.round) if stacked
                                else exp0.algorithm.round, mesh, client_axis=axis)
  diagnose = exp0.algorithm.diagnostics and jax.jit(
      jax.vmap(exp0.algorithm.diagnostics) if stacked else exp0.algorithm.diagnostics)
  state_finite = jax.jit(jax.vmap(_all_finite) if stacked else _all_finite)
  analysis_fns = [_make_analysis_fn(exp.config, exp.model, exp.dataset) if lead else None
                  for exp in exps]
  progress = Progress(end, mode=config.log.progress if lead else "none", unit="round",
                      initial=start)
  cache_before = compile_cache.CacheStats.snapshot()

  if start < end:
    log.info("compiling the round (%s, %d clients a round%s)...", config.algorithm.name,
             fl.clients_per_round, f", {len(exps)} runs vectorized" if stacked else "")
  try:
    for r in range(start, end):
      host_batches = [p.get(r) for p in prefetchers]
      host_batch = _stack_host(host_batches) if stacked else host_batches[0]
      batch = sharding.shard_clients(host_batch, mesh, client_axis=axis)
      with jax.transfer_guard_host_to_device("disallow"):
        state, round_metrics = round_fn(state, batch)
      m_all = jax.device_get(round_metrics)
      finite = np.atleast_1d(np.asarray(jax.device_get(state_finite(state))))
      diag = jax.device_get(diagnose(state)) if diagnose else None
      if runs[0].first_round_s is None:
        first = time.time() - t_start
        compiled = compile_cache.CacheStats.since(cache_before)
        for run in runs:
          run.first_round_s = first
          run.compile = {"cache_dir": cache_dir, "first_round_s": round(first, 3), **compiled}
        log.info("first round done %.1f s after start (compile included; compilation cache "
                 "%s: %d programs loaded, %d compiled and stored)", first, cache_dir or "off",
                 compiled["hits"], compiled["written"])
      done = r + 1 == end
      notes = None
      for i, run in enumerate(runs):
        if run.diverged:
          continue
        ri = i if stacked else None
        m = _view(m_all, ri)
        loss = _log_round(run, r, host_batches[i], m, bool(finite[i]),
                          None if diag is None else _view(diag, ri))
        if notes is None and not run.diverged:  # the progress note: the first live run's
          notes = "all clients dropped" if loss is None else f"train loss {loss:.4f}"
        if run.diverged:
          continue
        if (r + 1) % run.exp.config.eval.every == 0 or done:
          if lead:
            run.evaluate(_view(multihost.to_local(state.params), ri), r + 1,
                         {**run.comm_bytes(r + 1), "elapsed_s": round(time.time() - t_start, 3)})
        fn = analysis_fns[i]
        if fn is not None and ((r + 1) % config.analysis.every == 0 or done):
          run.record({"round": r + 1, "split": "analysis",
                      **_stability(fn(_view(multihost.to_local(state.params), ri), r + 1),
                                   _client_lr(run.exp, r)),
                      **({} if dp is None else {"epsilon": float(dp.epsilon[r + 1])})})
        if (r + 1) % run.exp.config.ckpt.every == 0 or done:
          run.ckpt.save(_view(state, ri))
      if all(run.diverged for run in runs):
        break
      progress.update(r + 1, notes or "")
  finally:
    progress.close()
    for p in prefetchers:
      p.close()
    for run in runs:
      run.close()

  states = []
  for i, run in enumerate(runs):
    run_state = _view(state, i if stacked else None)
    if not run.diverged and lead:
      _summarize(run, multihost.to_local(run_state), end, t_start)
    multihost.barrier("fedjax_med_summary")
    run.ckpt.close()
    states.append(run_state)
  diverged = [run.diverged for run in runs if run.diverged]
  if diverged:
    raise NonFiniteLossError(" | ".join(diverged))
  return states


def _stack_host(batches: list[types.ClientBatch]) -> types.ClientBatch:
  return jax.tree.map(lambda *xs: np.stack(xs), *batches)


def _log_round(run: _Run, r: int, host_batch: types.ClientBatch, m: types.RoundMetrics,
               finite: bool, diag: dict | None) -> float | None:
  """Records round ``r``'s train line of one run and returns its train loss; marks the
  run diverged when its new global state is not finite (it is then never evaluated or
  saved; alone, it raises ``NonFiniteLossError``)."""
  exp = run.exp
  drops = _drops(exp, r, host_batch, m)
  train_loss = _mean_loss(m, drops)
  if drops["all_dropped"]:
    log.warning("%sround %d: every one of the %d sampled clients dropped out or failed "
                "(%d failed: a non-finite loss or update; if every round fails, lower "
                "fl.client_lr); the round changes nothing%s", run.tag, r + 1,
                drops["dropped_clients"], drops["failed_clients"],
                " but the DP noise" if exp.plan.client_dp is not None else "")
  # Clients whose loss or update was non-finite were dropped in the round (a round
  # where every client failed changes nothing, is logged above and the run goes on).
  # The loss is measured before each step: check the new global state too, so that a
  # non-finite model is never evaluated or saved; that stops the run.
  if not finite:
    last = run.ckpt.latest_round()
    kept = (f"The last good checkpoint (round {last}) is kept in {run.ckpt.directory}."
            if last is not None else "No checkpoint had been saved yet.")
    run.diverged = (
        f"{run.tag}non-finite model or optimizer state in round {r + 1}; stopped. {kept} "
        "Lower --config.fl.client_lr or --config.fl.server_lr and rerun with --fresh or in "
        "a new workdir.")
    if not run.vectorized:
      raise NonFiniteLossError(run.diverged)
    log.error("%s", run.diverged)
    return None
  real = (host_batch.weight > 0) & ~drops["failed"]
  run.record({
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
      **run.comm_bytes(r + 1),
      # the round's client lr, when a schedule changes it (fl.client_lr_schedule / warmup)
      **({"client_lr": _client_lr(exp, r)} if exp.plan.client_lr_scale is not None
         else {}),
      **({k: float(v) for k, v in diag.items()} if diag is not None else {}),
      **({k: float(v) for k, v in m.privacy.items()} if m.privacy is not None else {}),
  })
  return train_loss


def _summarize(run: _Run, state, end: int, t_start: float) -> None:
  """Writes ``summary.json`` of a finished run (lead process)."""
  exp = run.exp
  config, ds, fl, dp = exp.config, exp.dataset, exp.config.fl, exp.privacy
  records = metrics.read_jsonl(run.writer.path)
  final = {}
  for split in ("val", "test"):
    last = [x for x in records if x["split"] == split and x["round"] == end]
    if not last:  # resumed an already finished run: evaluate again
      last = [run.evaluate(state.params, end)[split]]
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
      "time_to_first_round_s": run.first_round_s,
      # persistent compilation cache: its folder and the compiles it served (hits) or
      # compiled and stored (written) until the first round was done; a warm rerun
      # writes none
      "compile": run.compile,
      "engine": exp.engine._asdict(),
      "processes": jax.process_count(),
      "vectorized_runs": run.together,
      "compressor": config.comm.compressor,
      "aggregator": {"name": config.aggregator.name,
                     "stacked_delta_bytes": exp.stacked_delta_bytes},
      "attack": None if exp.plan.attack is None else {
          "kind": exp.plan.attack.kind, "fraction": config.attack.fraction,
          "scale": exp.plan.attack.scale, "malicious": list(exp.plan.attack.malicious)},
      "total_bytes_up": run.comm_bytes(end)["bytes_up"],
      "total_bytes_down": run.comm_bytes(end)["bytes_down"],
      # clients that dropped out (fl.dropout_rate) or failed (non-finite result), all rounds
      **_drop_totals(records),
      "target_accuracy": target,
      "rounds_to_target": reached[0] if reached else None,
      "bytes_up_to_target": run.comm_bytes(reached[0])["bytes_up"] if reached else None,
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
  metrics.write_json_atomic(os.path.join(run.workdir, "summary.json"), summary)
  log.info("%stest accuracy %.4f, AUC %.4f", run.tag, final["test"]["accuracy"],
           final["test"]["auc"])


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
