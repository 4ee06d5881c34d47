"""Run configs at the edge: resolution of defaults and validation.

``resolve(config)`` returns the config a run actually uses: deprecated flat
keys moved to their nested place (with a warning) and the server optimizer's
unset fields filled from the algorithm's registry entry. ``validate`` raises
one clear ``ConfigError`` per impossible value. The experiment builder calls
both before anything is written to the workdir, so a bad value never leaves
half-written output, and the resolved config is what ``config.json`` records.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re

import ml_collections

from fedjax_med import augment, compression, optimizers, partition
from fedjax_med.algorithms import aggregators, attacks
from fedjax_med.algorithms import registry as algorithm_registry
from fedjax_med.data import registry
from fedjax_med.errors import ConfigError
from fedjax_med.models import layers
from fedjax_med.models import registry as model_registry

log = logging.getLogger(__name__)

# Deprecated flat keys (kept for one release) -> where their value goes now.
DEPRECATED = {
    "algorithm.mu": ("algorithm.fedprox.mu",),
    "algorithm.rho": ("algorithm.fedsam.rho", "algorithm.fedasam.rho"),
    "algorithm.asam_eta": ("algorithm.fedasam.eta",),
    "algorithm.feddyn_alpha": ("algorithm.feddyn.alpha",),
    "algorithm.server_eps": ("fl.server_eps",),
}
PROGRESS = ("auto", "bar", "lines", "none")
# model.name "" resolves to the small CNN of the data's spatial dimensions.
DEFAULT_MODELS = {2: "cnn", 3: "cnn3d"}
# Host memory a round's stacked client batch or one eval batch may take; larger is
# almost surely a typo (and would fail with a MemoryError after output was written).
MAX_BATCH_BYTES = 8 * 2**30


def check_batch_bytes(key: str, value, batch_bytes: int) -> None:
  """Raises ``ConfigError`` if a batch of ``batch_bytes`` would exceed ``MAX_BATCH_BYTES``."""
  _check(batch_bytes <= MAX_BATCH_BYTES, key, value,
         f"one batch would take {batch_bytes / 2**30:.1f} GiB of host memory (limit "
         f"{MAX_BATCH_BYTES / 2**30:.0f} GiB); use a smaller value")


# eval.select_on -> True if larger is better (the validation metric that selects the model).
SELECT_ON = {"auc": True, "balanced_accuracy": True, "accuracy": True, "loss": False}
# fl.<key> -> field of the registry's ServerDefaults used when the key is unset (None).
SERVER_KEYS = {"server_opt": "opt", "server_lr": "lr", "server_momentum": "momentum",
               "server_eps": "eps"}


def _set(config, key: str, value) -> None:
  *parents, leaf = key.split(".")
  node = config
  for part in parents:
    node = node[part]
  node[leaf] = value


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config a run uses (a copy; ``config`` is not changed).

  - A deprecated flat key that is set (not None) is moved to its nested key(s)
    with a warning, and cleared.
  - ``fl.server_opt`` / ``server_lr`` / ``server_momentum`` / ``server_eps``
    left unset (None) take the algorithm's registry defaults (``fedadam``:
    Adam with lr 0.01; ``fedavg``: SGD with lr 1.0).
  - ``fl.client_momentum`` left unset is 0.9 for ``fl.client_opt=momentum``, else 0.
  - ``model.name`` left ``""`` is the small CNN for the data: ``cnn`` for images,
    ``cnn3d`` for the 3D volumes (so one command runs on any MedMNIST set).

  Raises:
    ConfigError: unknown ``algorithm.name``, or a server optimizer that
      contradicts the algorithm's name (``fedadam`` with ``fl.server_opt=sgd``).
  """
  config = ml_collections.ConfigDict(config.to_dict(), type_safe=False)
  for old, new in DEPRECATED.items():
    value = _get(config, old)
    if value is None:
      continue
    log.warning("--config.%s is deprecated and will be removed; use --config.%s (applied).",
                old, " / --config.".join(new))
    for key in new:
      _set(config, key, value)
    _set(config, old, None)
  name = config.algorithm.name
  _check(name in algorithm_registry.ENTRIES, "algorithm.name", name,
         f"choose one of {list(algorithm_registry.ENTRIES)}")
  entry = algorithm_registry.get(name)
  fixed = entry.server_opt_fixed and config.fl.server_opt not in (None, entry.server.opt)
  _check(not fixed, "fl.server_opt", config.fl.server_opt,
         f"{name} is {entry.server.opt} on the server by definition; leave fl.server_opt unset "
         "or use algorithm.name=fedavg with the server optimizer you want")
  for key, field in SERVER_KEYS.items():
    if config.fl[key] is None:
      config.fl[key] = getattr(entry.server, field)
  if config.fl.client_momentum is None:
    config.fl.client_momentum = (optimizers.DEFAULT_MOMENTUM
                                 if config.fl.client_opt == "momentum" else 0.0)
  if not config.model.name and config.data.name in registry.DATASETS:
    config.model.name = DEFAULT_MODELS[registry.DATASETS[config.data.name].dims]
  return config


def _check(cond: bool, key: str, value, fix: str) -> None:
  if not cond:
    raise ConfigError(f"invalid --config.{key}={value!r}: {fix}")


def _positive_int(config, key: str) -> None:
  value = _get(config, key)
  _check(isinstance(value, int) and value >= 1, key, value, "must be an integer >= 1")


def _positive_float(config, key: str) -> None:
  value = _get(config, key)
  ok = isinstance(value, (int, float)) and math.isfinite(value) and value > 0
  _check(ok, key, value, "must be a finite number > 0")


def _get(config, key: str):
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def check_runs(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` unless ``runs.seeds`` is an integer >= 1 whose seeds are valid."""
  seeds = config.runs.seeds
  _check(isinstance(seeds, int) and not isinstance(seeds, bool) and seeds >= 1, "runs.seeds",
         seeds, "must be an integer >= 1 (the number of seeds trained together)")
  _check(config.seed + seeds <= 2**31, "runs.seeds", seeds,
         f"seeds {config.seed}..{config.seed + seeds - 1} pass 2**31; lower --config.seed")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` naming the first invalid key and how to fix it (on ``resolve``'s output)."""
  name = config.algorithm.name
  _check(name in algorithm_registry.ENTRIES, "algorithm.name", name,
         f"choose one of {list(algorithm_registry.ENTRIES)}")
  entry = algorithm_registry.get(name)
  _check(isinstance(config.seed, int) and 0 <= config.seed < 2**31, "seed", config.seed,
         "must be an integer in [0, 2**31)")
  _check(config.log.progress in PROGRESS, "log.progress", config.log.progress,
         f"choose one of {PROGRESS}")
  _check(isinstance(config.get("compile_cache", "auto"), str), "compile_cache",
         config.get("compile_cache"), "must be a folder, 'auto', or '' / 'none' (off)")
  if "runs" in config:
    check_runs(config)
  _check(config.data.name in registry.DATASETS, "data.name", config.data.name,
         f"choose one of {sorted(registry.DATASETS)}")
  sizes = registry.DATASETS[config.data.name].sizes
  _check(config.data.size in sizes, "data.size", config.data.size,
         f"{config.data.name} exists at sizes {sizes}; choose one of them")
  _check(config.data.augment in augment.KINDS, "data.augment", config.data.augment,
         f"choose one of {augment.KINDS}")
  sided = augment.sided_labels(registry.DATASETS[config.data.name].labels)
  _check(config.data.augment != "flip_shift" or not sided, "data.augment", config.data.augment,
         f"a left-right flip would swap {config.data.name}'s sided classes "
         f"({', '.join(sided[:2])}, ...); use --config.data.augment=shift")
  _check(config.model.name in model_registry.names(), "model.name", config.model.name,
         f"choose one of {model_registry.names()}")
  _check(config.model.conv_impl in layers.IMPLS, "model.conv_impl", config.model.conv_impl,
         f"choose one of {layers.IMPLS}")
  model_registry.check_norm(config.model.name, config.model.norm)
  info = registry.DATASETS[config.data.name]  # a 2D model on volumes (or 3D on images): exit 2
  model_registry.check_input(config.model.name,
                             (config.data.size,) * info.dims + (info.channels,))
  for key in ("fl.rounds", "fl.num_clients", "fl.clients_per_round", "fl.local_steps",
              "fl.batch_size", "eval.every", "eval.batch_size", "ckpt.every", "ckpt.keep"):
    _positive_int(config, key)
  _check(config.fl.clients_per_round <= config.fl.num_clients, "fl.clients_per_round",
         config.fl.clients_per_round,
         f"cannot sample more clients per round than fl.num_clients={config.fl.num_clients}")
  for key in ("fl.client_lr", "fl.server_lr"):
    _positive_float(config, key)
  for key in ("fl.client_momentum", "fl.server_momentum"):
    value = _get(config, key)
    _check(0.0 <= value < 1.0, key, value, "must be in [0, 1)")
  fl = config.fl
  _check(math.isfinite(fl.client_weight_decay) and fl.client_weight_decay >= 0,
         "fl.client_weight_decay", fl.client_weight_decay, "must be a finite number >= 0")
  _check(fl.client_opt in optimizers.CLIENT, "fl.client_opt", fl.client_opt,
         f"choose one of {list(optimizers.CLIENT)}")
  if fl.client_opt == "momentum":
    _check(fl.client_momentum > 0, "fl.client_momentum", fl.client_momentum,
           "fl.client_opt=momentum needs a momentum in (0, 1) (unset = 0.9)")
  if fl.client_opt == "adamw":
    _check(fl.client_momentum == 0, "fl.client_momentum", fl.client_momentum,
           "adamw has its own first moment (b1 0.9): leave fl.client_momentum unset")
  _check(fl.client_lr_schedule in optimizers.SCHEDULES, "fl.client_lr_schedule",
         fl.client_lr_schedule, "choose constant or cosine")
  _check(isinstance(fl.client_warmup_rounds, int) and 0 <= fl.client_warmup_rounds < fl.rounds,
         "fl.client_warmup_rounds", fl.client_warmup_rounds,
         f"must be an integer in [0, fl.rounds={fl.rounds})")
  _check(0 <= fl.client_lr_min_ratio <= 1, "fl.client_lr_min_ratio", fl.client_lr_min_ratio,
         "must be in [0, 1]")
  _check(config.fl.server_opt in optimizers.SERVER, "fl.server_opt", config.fl.server_opt,
         f"choose one of {sorted(optimizers.SERVER)}")
  _check(math.isfinite(config.fl.server_eps) and config.fl.server_eps > 0, "fl.server_eps",
         config.fl.server_eps, "must be a finite number > 0")
  if entry.plain_sgd:
    _check(fl.client_opt == "sgd", "fl.client_opt", fl.client_opt,
           f"{name} assumes plain local SGD: use sgd")
    for key in ("fl.client_momentum", "fl.client_weight_decay"):
      _check(_get(config, key) == 0, key, _get(config, key),
             f"{name} assumes plain local SGD: set it to 0")
  _check(config.fl.client_chunk_size >= 0, "fl.client_chunk_size", config.fl.client_chunk_size,
         "must be >= 0 (0 = automatic per backend)")
  _check(config.fl.local_unroll >= 0, "fl.local_unroll", config.fl.local_unroll,
         "must be >= 0 (0 = automatic, 1 = lax.scan without unrolling)")
  _check(isinstance(fl.dropout_rate, (int, float)) and 0 <= fl.dropout_rate < 1,
         "fl.dropout_rate", fl.dropout_rate, "must be in [0, 1) (0 = every client reports)")
  _check(isinstance(fl.straggler_fraction, (int, float)) and 0 <= fl.straggler_fraction <= 1,
         "fl.straggler_fraction", fl.straggler_fraction, "must be in [0, 1] (0 = no stragglers)")
  if fl.straggler_fraction > 0:
    most = "S" if fl.local_epochs > 0 else f"fl.local_steps={fl.local_steps}"
    _check(isinstance(fl.straggler_steps, int) and fl.straggler_steps >= 1
           and (fl.local_epochs > 0 or fl.straggler_steps < fl.local_steps),
           "fl.straggler_steps", fl.straggler_steps,
           f"stragglers run fewer local steps: an integer in [1, {most})")
  if not entry.federated:
    for key in ("fl.dropout_rate", "fl.straggler_fraction"):
      _check(_get(config, key) == 0, key, _get(config, key),
             f"{name} trains one pooled model: no client can drop out or straggle; set it to 0")
  _check(config.partition.kind in partition.KINDS, "partition.kind", config.partition.kind,
         f"choose one of {partition.KINDS}")
  _check(math.isfinite(config.fl.local_epochs) and config.fl.local_epochs >= 0,
         "fl.local_epochs", config.fl.local_epochs, "must be >= 0 (0 = use fl.local_steps)")
  _check(config.fl.server_lr_schedule in optimizers.SCHEDULES, "fl.server_lr_schedule",
         config.fl.server_lr_schedule, "choose constant or cosine")
  _check(0 <= config.fl.server_lr_min_ratio <= 1, "fl.server_lr_min_ratio",
         config.fl.server_lr_min_ratio, "must be in [0, 1]")
  _check(math.isfinite(config.partition.site_shift) and 0 <= config.partition.site_shift <= 10,
         "partition.site_shift", config.partition.site_shift, "must be in [0, 10] (0 = off)")
  cm = config.comm
  _check(cm.compressor in compression.KINDS, "comm.compressor", cm.compressor,
         f"choose one of {compression.KINDS}")
  _check(cm.bits in (1, 2, 4, 8), "comm.bits", cm.bits, "choose 1, 2, 4 or 8")
  _check(cm.block >= 0, "comm.block", cm.block, "must be >= 0 (0 = per tensor)")
  _check(0 < cm.fraction <= 1, "comm.fraction", cm.fraction, "must be in (0, 1]")
  _check(0 <= cm.target_accuracy <= 1, "comm.target_accuracy", cm.target_accuracy,
         "must be in [0, 1]")
  _check(cm.compressor == "none" or entry.communicates, "comm.compressor",
         cm.compressor, f"{name} sends nothing: use comm.compressor=none")
  an = config.analysis
  _check(an.every >= 0, "analysis.every", an.every, "must be >= 0 (0 = off)")
  if an.every:
    for key in ("analysis.examples", "analysis.batch_size"):
      _positive_int(config, key)
    _check(an.split in ("train", "val", "test"), "analysis.split", an.split,
           "choose train, val or test")
    for key in ("lanczos_iters", "probes", "m"):
      _check(an[key] >= 0, f"analysis.{key}", an[key], "must be >= 0 (0 = off)")
    for key in ("lanczos_tol", "eps", "rho"):
      _check(math.isfinite(an[key]) and an[key] >= 0, f"analysis.{key}", an[key], "must be >= 0")
  a = config.algorithm
  for other, e in algorithm_registry.ENTRIES.items():
    for key, hparam in e.hparams.items():
      value = a[other][key]
      problem = hparam.check(value)
      _check(problem is None, f"algorithm.{other}.{key}", value, problem)
  for key in ("swa_fraction", "swa_lr_ratio"):
    value = a[key]
    _check(math.isfinite(value) and value >= 0, f"algorithm.{key}", value, "must be >= 0")
  _check(0 < a.swa_fraction <= 1 or not a.swa, "algorithm.swa_fraction", a.swa_fraction,
         "must be in (0, 1] when algorithm.swa is on")
  _check(a.swa_period >= 1, "algorithm.swa_period", a.swa_period, "must be >= 1")
  if not entry.federated:
    _check(config.fl.clients_per_round == 1, "fl.clients_per_round",
           config.fl.clients_per_round,
           "centralized training pools every site's data into one client: set it to 1 "
           "(fl.num_clients stays the number of sites evaluated on their held-out shares)")
  _validate_privacy(config, entry)
  _validate_aggregator(config, entry)
  _validate_attack(config, entry)
  ev = config.eval
  _check(isinstance(ev.site_holdout, (int, float)) and 0 <= ev.site_holdout <= 0.9,
         "eval.site_holdout", ev.site_holdout, "must be in [0, 0.9] (0 = no per-site test share)")
  _check(ev.select_on in SELECT_ON, "eval.select_on", ev.select_on,
         f"choose one of {sorted(SELECT_ON)}")
  _validate_personal(config, entry)


def _validate_personal(config: ml_collections.ConfigDict, entry) -> None:
  """``config.personal``: the personal layers and the fine-tuning before the per-site test."""
  pe, name = config.personal, config.algorithm.name
  keeps = [n for n, e in algorithm_registry.ENTRIES.items() if e.personal]
  if pe.layers:
    _check(bool(entry.personal), "personal.layers", pe.layers,
           f"{name} keeps no layers per client; it applies to {keeps} (or leave it '')")
    try:
      re.compile(pe.layers)
    except re.error as e:
      _check(False, "personal.layers", pe.layers,
             f"not a regular expression ({e}); e.g. 'params/Dense_1/'")
  if name == "fedrep" and config.fl.local_epochs == 0:
    frac, steps = config.algorithm.fedrep.head_fraction, config.fl.local_steps
    head = math.floor(frac * steps + 0.5)
    _check(frac in (0.0, 1.0) or 1 <= head <= steps - 1, "algorithm.fedrep.head_fraction",
           frac, f"gives {head} head steps of fl.local_steps={steps}: choose it so that both "
           "the head and the body get at least one step (0 / 1 train only one of them)")
  _check(isinstance(pe.finetune_steps, int) and not isinstance(pe.finetune_steps, bool)
         and pe.finetune_steps >= 0, "personal.finetune_steps",
         pe.finetune_steps, "must be an integer >= 0 (0 = no fine-tuning)")
  _check(isinstance(pe.finetune_lr, (int, float)) and math.isfinite(pe.finetune_lr)
         and pe.finetune_lr >= 0, "personal.finetune_lr", pe.finetune_lr,
         "must be a finite number >= 0 (0 = fl.client_lr)")
  if pe.finetune_steps:
    _check(config.eval.site_holdout > 0, "personal.finetune_steps", pe.finetune_steps,
           "fine-tuning is judged on each site's held-out share: set eval.site_holdout > 0")
    _check(config.privacy.level == "none", "personal.finetune_steps", pe.finetune_steps,
           "fine-tuning on a site's data is outside the privacy accounting: set it to 0 "
           "with privacy.level != none")


def _validate_aggregator(config: ml_collections.ConfigDict, entry) -> None:
  """``config.aggregator``: its name, hyper-parameters, and what contradicts the rest of the run."""
  ag, fl = config.aggregator, config.fl
  name = ag.name
  _check(name in aggregators.AGGREGATORS, "aggregator.name", name,
         f"choose one of {list(aggregators.AGGREGATORS)}")
  if name == "mean":
    return
  _check(entry.communicates, "aggregator.name", name,
         f"{config.algorithm.name} aggregates no client updates: use mean")
  _check(config.privacy.level != "client", "aggregator.name", name,
         "client-level DP replaces the aggregator (clip, sum, noise): use mean")
  params = {k: ag[k] for k in aggregators.PARAMS[name]}
  try:
    aggregators.get(name, **params)  # the builder's own range checks
  except ValueError as e:
    key = next(k for k in params if f" {k}=" in str(e))
    fix = str(e).split(f" {key}={ag[key]!r} ", 1)[-1]
    raise ConfigError(f"invalid --config.aggregator.{key}={ag[key]!r}: {fix} ({name})") from None
  c = fl.clients_per_round
  if name in ("krum", "multikrum"):
    f = ag.num_byzantine
    _check(2 * f + 2 < c, "aggregator.num_byzantine", f,
           f"Krum tolerates f Byzantine clients only if 2f + 2 < fl.clients_per_round={c}: "
           f"use f <= {max((c - 3) // 2, 0)} or more clients per round")
  if name == "multikrum":
    _check(ag.multikrum_m <= c - ag.num_byzantine, "aggregator.multikrum_m", ag.multikrum_m,
           f"averages at most n - f = {c - ag.num_byzantine} of the {c} clients (0 = n - f)")
  if name == "trimmed_mean":
    drop = math.floor(ag.trim_fraction * c)
    _check(2 * drop < c, "aggregator.trim_fraction", ag.trim_fraction,
           f"drops {drop} clients at each end of {c}: nothing remains")


def _validate_attack(config: ml_collections.ConfigDict, entry) -> None:
  """``config.attack``: its values, and whether the aggregator tolerates it (issue 16)."""
  at, fl, ag = config.attack, config.fl, config.aggregator
  _check(at.kind in attacks.KINDS, "attack.kind", at.kind, f"choose one of {list(attacks.KINDS)}")
  _check(isinstance(at.fraction, (int, float)) and 0 <= at.fraction < 1, "attack.fraction",
         at.fraction, "must be in [0, 1): the share of fl.num_clients that is malicious")
  _check(isinstance(at.scale, (int, float)) and math.isfinite(at.scale) and at.scale >= 0,
         "attack.scale", at.scale, "must be a finite number >= 0 (0 = the kind's default)")
  if at.kind == "none":
    _check(at.fraction == 0, "attack.fraction", at.fraction,
           "needs an attack: set --config.attack.kind (or leave the fraction 0)")
    _check(at.scale == 0, "attack.scale", at.scale,
           "needs an attack: set --config.attack.kind (or leave the scale 0)")
    return
  _check(entry.communicates, "attack.kind", at.kind,
         f"{config.algorithm.name} has no federated round to attack")
  _check(at.kind != "label_flip" or at.scale == 0, "attack.scale", at.scale,
         "label_flip takes no scale: leave it 0")
  _check(at.kind in attacks.DATA_KINDS or config.privacy.level != "client", "attack.kind",
         at.kind, "model poisoning is not simulated under client-level DP (the clipping runs "
         "inside the client map, so a replaced update would escape it): use label_flip or "
         "privacy.level=none|record")
  total = attacks.num_malicious(fl.num_clients, at.fraction)
  _check(total > 0, "attack.fraction", at.fraction,
         f"makes round(fraction * fl.num_clients={fl.num_clients}) = 0 clients malicious: "
         "use a larger fraction (or attack.kind=none)")
  # What the aggregator must tolerate: the malicious clients a round holds when every
  # client reports, all of them if every client takes part, else the expected number
  # rounded up (a round may draw more: the aggregator's guarantee is then void).
  c, n = fl.clients_per_round, fl.num_clients
  m = total if c >= n else min(c, math.ceil(total * c / n))
  what = f"the {m} malicious clients " + (
      f"of attack.fraction={at.fraction}" if c >= n else
      f"a round of {c} holds on average (attack.fraction={at.fraction} of {n})")
  if ag.name in ("mean", "stacked_mean", "norm_bound"):
    return  # the mean tolerates nothing (the baseline); norm bounding has no breakdown point
  impossible = f"no setting can: lower attack.fraction or raise fl.clients_per_round={c}"
  if ag.name in ("krum", "multikrum"):
    _check(ag.num_byzantine >= m, "aggregator.num_byzantine", ag.num_byzantine,
           f"Krum must tolerate {what}: "
           + (f"use f >= {m} (with 2f + 2 < fl.clients_per_round={c})" if 2 * m + 2 < c
              else impossible))
  elif ag.name == "trimmed_mean":
    drop = math.floor(ag.trim_fraction * c)
    least = math.ceil(m / c * 1e4) / 1e4  # printed rounded up: floor(least * c) >= m
    _check(drop >= m, "aggregator.trim_fraction", ag.trim_fraction,
           f"trims {drop} of {c} clients at each end, fewer than {what}: "
           + (f"use trim_fraction >= {least:g} (< 0.5)" if 2 * m < c else impossible))
  else:  # median, geometric_median: breakdown point 1/2
    _check(2 * m < c, "attack.fraction", at.fraction,
           f"{ag.name} tolerates fewer than half of a round's {c} clients, not {what}")


PRIVACY_LEVELS = ("none", "record", "client")
ACCOUNTANTS = ("rdp", "pld")
MECHANISMS = ("gaussian", "banded_mf")


def _validate_privacy(config: ml_collections.ConfigDict, entry) -> None:
  """``config.privacy``: values, and what contradicts the rest of the run."""
  p, name = config.privacy, config.algorithm.name
  _check(p.level in PRIVACY_LEVELS, "privacy.level", p.level, f"choose one of {PRIVACY_LEVELS}")
  if p.level == "none":
    return
  missing = [m for m in ("jax_privacy", "dp_accounting") if importlib.util.find_spec(m) is None]
  _check(not missing, "privacy.level", p.level,
         f"needs {' and '.join(missing)}: pip install -e \".[privacy]\" (or fedjax-med[privacy])")
  _check(p.level in entry.privacy, "privacy.level", p.level,
         f"{name} does not support {p.level}-level DP; algorithms that do: "
         f"{[n for n, e in algorithm_registry.ENTRIES.items() if p.level in e.privacy]}")
  given = [k for k in ("noise_multiplier", "epsilon") if p[k] is not None]
  if len(given) != 1:
    raise ConfigError(
        "invalid --config.privacy.noise_multiplier / --config.privacy.epsilon: give exactly one "
        f"(the noise, or a target epsilon to calibrate it for), got {given or 'neither'}")
  if p.noise_multiplier is not None:
    _check(math.isfinite(p.noise_multiplier) and p.noise_multiplier >= 0,
           "privacy.noise_multiplier", p.noise_multiplier, "must be a finite number >= 0")
  if p.epsilon is not None:
    _check(p.epsilon > 0, "privacy.epsilon", p.epsilon, "must be > 0 (inf = no noise)")
  _check(isinstance(p.delta, float) and 0 < p.delta < 1, "privacy.delta", p.delta,
         "must be in (0, 1), and below 1 / the number of protected units")
  _check(p.clip_norm > 0, "privacy.clip_norm", p.clip_norm, "must be > 0 (inf = no clipping)")
  noiseless = p.noise_multiplier == 0 or p.epsilon == math.inf
  _check(math.isfinite(p.clip_norm) or noiseless, "privacy.clip_norm", p.clip_norm,
         "noise scales with the clip norm: an infinite one only without noise "
         "(noise_multiplier=0 or epsilon=inf)")
  _check(p.accountant in ACCOUNTANTS, "privacy.accountant", p.accountant,
         f"choose one of {ACCOUNTANTS}")
  if p.max_epsilon is not None:
    _check(p.max_epsilon > 0, "privacy.max_epsilon", p.max_epsilon, "must be > 0 (unset = no cap)")
  if p.target_quantile is not None:
    _check(p.level == "client", "privacy.target_quantile", p.target_quantile,
           "adaptive clipping is for client-level DP; leave it unset with privacy.level=record")
    _check(0 < p.target_quantile < 1, "privacy.target_quantile", p.target_quantile,
           "must be in (0, 1)")
    _check(math.isfinite(p.clip_norm), "privacy.clip_norm", p.clip_norm,
           "adaptive clipping starts from a finite clip norm")
  _check(math.isfinite(p.clip_lr) and p.clip_lr > 0, "privacy.clip_lr", p.clip_lr, "must be > 0")
  if p.count_noise is not None:
    _check(math.isfinite(p.count_noise) and p.count_noise > 0, "privacy.count_noise",
           p.count_noise, "must be a finite number > 0 (unset = expected clients / 20)")
  _check(p.mechanism in MECHANISMS, "privacy.mechanism", p.mechanism,
         f"choose one of {MECHANISMS}")
  if p.mechanism == "banded_mf":
    _check(p.level == "client", "privacy.mechanism", p.mechanism,
           "correlated noise (banded_mf) is for client-level DP; use gaussian with record level")
    _check(p.target_quantile is None, "privacy.target_quantile", p.target_quantile,
           "adaptive clipping is not supported with banded_mf; leave it unset")
    fl = config.fl
    _check(isinstance(p.bands, int) and 1 <= p.bands <= fl.rounds, "privacy.bands", p.bands,
           f"must be an integer in [1, fl.rounds={fl.rounds}]")
    _check(p.bands * fl.clients_per_round <= fl.num_clients, "privacy.bands", p.bands,
           f"cyclic sampling puts 1/bands of the {fl.num_clients} clients in each round's group, "
           f"which must hold the {fl.clients_per_round} expected clients: bands <= "
           f"{fl.num_clients // fl.clients_per_round}")
  if p.level == "record":
    _check(config.fl.straggler_fraction == 0, "fl.straggler_fraction",
           config.fl.straggler_fraction,
           "record-level DP runs (and accounts) every local step, so a straggler cannot skip "
           "steps: set it to 0")
    _check(config.fl.local_epochs == 0, "fl.local_epochs", config.fl.local_epochs,
           "record-level DP runs every one of fl.local_steps (Poisson batches): set it to 0")
    _check(config.model.norm != "batch", "model.norm", config.model.norm,
           "BatchNorm mixes the examples of a batch, so DP-SGD's per-example gradients do not "
           "exist: use group or layer")
