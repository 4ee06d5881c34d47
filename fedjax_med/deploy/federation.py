"""What the server and every site build from the run's config, without any data.

The server of a deployed run holds no images, and a site holds only its own, so
neither can call ``experiment.build`` (which loads the whole MedMNIST file). Both
call :func:`build` instead: the same config resolution and validation, engine, model,
loss, round plan and algorithm as ``experiment.build``, with the image shape and class
count taken from the dataset registry. Both sides hash the resolved config
(:func:`config_hash`) and compare the hashes when a site connects.

Client sampling, simulated dropout and stragglers are pure functions of
``(seed, round, client id)`` (``fedjax_med.batching``), so the server reproduces the
simulation's draws exactly (:func:`round_clients`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from fedjax_med import (
  algorithms,
  batching,
  config_files,
  errors,
  experiment,
  models,
  tasks,
  types,
)
from fedjax_med import config as config_lib
from fedjax_med.algorithms import base, registry
from fedjax_med.data import registry as data_registry

# Config keys that name things on one machine only (where data lives, how it logs):
# left out of the hash that the server and the sites compare.
LOCAL_KEYS = ("data.root", "data.download", "data.verify_md5", "log")


class Federation(NamedTuple):
  """The pieces of a run that the server and the sites share (no data)."""

  config: ml_collections.ConfigDict  # resolved
  config_hash: str  # sha256 of the resolved config without LOCAL_KEYS
  image_shape: tuple[int, ...]  # (H, W, ch) or (D, H, W, ch)
  num_classes: int
  model: Any  # flax module
  plan: algorithms.RoundPlan
  algorithm: types.FederatedAlgorithm
  parts: base.RoundParts  # the client and server halves of the round
  stateful: bool  # the algorithm keeps a state row per client (at the site)
  local_steps: int
  bytes_up_per_client: int  # as experiment.bytes_up_per_round, for one client
  bytes_down_per_client: int
  privacy: Any = None  # privacy.plan.PrivacyPlan of client-level DP, else None


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """The config of ``--config=spec`` with ``--config.KEY=VALUE`` ``overrides`` applied.

  ``spec`` is a file or packaged name, as ``fedjax-med-train --config`` takes it; the
  overrides are parsed by ``ml_collections.config_flags`` with the config locked (an
  unknown key is an error), as in training.

  Raises:
    ConfigError: unknown config, unknown key or a bad value.
  """
  try:
    path = config_files.resolve(spec)
  except config_files.UnknownConfigError as e:
    raise errors.ConfigError(str(e)) from None
  bad = [o for o in overrides if not o.startswith("--config.")]
  if bad:
    raise errors.ConfigError(f"overrides must look like --config.KEY=VALUE, got {bad[0]!r}")
  argv = ["deploy", f"--config={path}", *overrides]
  values = flags.FlagValues()
  # config_flags defines one flag per override it finds in sys_argv.
  config_flags.DEFINE_config_file("config", None, "run config", flag_values=values,
                                  lock_config=True, sys_argv=argv)
  try:
    values(argv)
    config = values.config
    config.to_dict()
  except (flags.Error, KeyError, ValueError, AttributeError, TypeError, OSError) as e:
    while e.args and isinstance(e.args[0], BaseException):
      e = e.args[0]
    raise errors.ConfigError(f"bad --config or override: {e}") from None
  return config


def config_hash(config: ml_collections.ConfigDict) -> str:
  """sha256 (hex) of the resolved ``config`` without the machine-local keys."""
  d = config_lib.resolve(config).to_dict()
  for key in LOCAL_KEYS:
    *parents, leaf = key.split(".")
    node = d
    for p in parents:
      node = node.get(p, {})
    node.pop(leaf, None)
  text = json.dumps(d, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()


def check_supported(config: ml_collections.ConfigDict) -> None:
  """Raises ``ConfigError`` for what a deployed run does not do (yet)."""
  entry = registry.get(config.algorithm.name)
  problems = {
      "algorithm.name": (not entry.federated or not entry.communicates,
                         "a baseline that sends nothing needs no deployment"),
      "algorithm.swa": (config.algorithm.swa, "SWA is not deployed; leave it False"),
      "privacy.level": (config.privacy.level == "record",
                        "record-level DP needs every site's size to calibrate its noise; "
                        "use client (DP-FedAvg) or none"),
      "comm.compressor": (config.privacy.level == "client" and config.comm.compressor != "none",
                          "under client-level DP a site uploads its clipped delta "
                          "uncompressed; use none"),
      "attack.kind": (config.attack.kind != "none", "attacks are simulation-only"),
      "fl.local_epochs": (config.fl.local_epochs > 0,
                          "S from local epochs needs every site's size; use fl.local_steps"),
      "partition.site_shift": (config.partition.site_shift > 0,
                               "site shift is simulation-only (real sites differ by themselves)"),
  }
  for key, (bad, fix) in problems.items():
    if bad:
      raise errors.ConfigError(f"--config.{key} is not supported in a deployed run: {fix}")


def build(config: ml_collections.ConfigDict) -> Federation:
  """Resolves, validates and builds what the server and the sites share (no data).

  The plan and algorithm are those of ``experiment.build`` for the same config.

  Raises:
    ConfigError / DataError: an invalid or undeployable config.
  """
  config = config_lib.resolve(config)
  config_lib.validate(config)
  check_supported(config)
  info = data_registry.get_info(config.data.name)
  image_shape = (config.data.size,) * info.dims + (info.channels,)
  eng = experiment.make_engine(config)
  model = models.get_model(config.model.name, info.num_classes, conv_impl=eng.conv_impl,
                           norm=config.model.norm)
  loss_fn = tasks.make_loss_fn(model, augment=config.data.augment, multi_label=info.multi_label)
  privacy = None
  if config.privacy.level == "client":  # depends on the config alone, not on any data
    from fedjax_med.privacy import plan as privacy_plan_lib  # the optional extra

    privacy = privacy_plan_lib.make(config, None, config.fl.local_steps)
  plan = experiment.make_plan(config, eng, privacy_plan=privacy)  # no attack: check_supported
  alg = experiment.make_algorithm(config, loss_fn, plan)
  entry = registry.get(config.algorithm.name)
  shapes = jax.eval_shape(functools.partial(tasks.init_variables, model,
                                            image_shape=image_shape), jax.random.PRNGKey(0))
  up, down = experiment.client_bits(config, shapes)
  return Federation(config, config_hash(config), image_shape, info.num_classes, model, plan,
                    alg, base.round_parts(alg), entry.stateful or plan.error_feedback,
                    config.fl.local_steps, up // 8, down // 8, privacy)


def initial_state(fed: Federation) -> types.ServerState:
  """The state at round 0, as ``Experiment.initial_state`` (same seed, same keys)."""
  return experiment.initial_state(fed.config.seed, fed.model, fed.algorithm, fed.image_shape)


def initial_row(fed: Federation, state: types.ServerState) -> types.ClientState | None:
  """A client's initial state row (every client starts from the same row), or None."""
  if state.client_state is None:
    return None
  return jax.tree.map(lambda x: x[0], state.client_state)


class RoundClients(NamedTuple):
  """Who takes part in a round, as ``Experiment.make_batch`` decides it."""

  client_ids: np.ndarray  # [C] int32, sorted: slot c holds client_ids[c]
  dropped: np.ndarray  # [C] bool: simulated dropout (fl.dropout_rate): not asked
  stragglers: np.ndarray  # [C] bool: real steps stop at fl.straggler_steps


def round_clients(fed: Federation, round_idx: int) -> RoundClients:
  """Round ``round_idx``'s sampled clients (the simulation's draw, Poisson under client-level
  DP: ``experiment.sample_clients``), simulated dropouts and stragglers."""
  config = fed.config
  fl, seed = config.fl, config.seed
  ids = experiment.sample_clients(config, fed.privacy, fl.num_clients, round_idx)
  dropped = batching.dropout_mask(ids, fl.dropout_rate, seed, round_idx)
  stragglers = batching.straggler_mask(ids, fl.straggler_fraction, seed, round_idx)
  return RoundClients(ids, dropped, stragglers & ~dropped)


def round_key(state: types.ServerState, slot: int) -> np.ndarray:
  """Client slot ``slot``'s key of this round (``base.round_keys``), as uint32 [2].

  ``jax.random.split`` is partitionable (the default since JAX 0.5), so slot ``c``'s
  key does not depend on how many slots the simulation padded the round to.
  """
  keys = base.round_keys(state, slot + 1)
  return np.asarray(base.raw_key(keys[slot]))
