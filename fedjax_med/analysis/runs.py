"""Load a training run for analysis: config, data, model and checkpointed parameters.

A run's workdir (``train.train_and_evaluate``) holds ``config.json`` and
``checkpoints/<round>/`` with the algorithm's ``ServerState``. To restore it
exactly, the same experiment is rebuilt from the config (``experiment.build``) and its ``init`` output
serves as the template (its structure includes optimizer and algorithm state);
the analysed model is the state's ``params``.
"""

from __future__ import annotations

import json
import os
from typing import NamedTuple

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from fedjax_med import checkpoint, data, errors, experiment, types


class RunError(errors.UserError):
  """A workdir that is missing, is not a training run, or lacks the requested checkpoint."""


class Run(NamedTuple):
  workdir: str
  config: ml_collections.ConfigDict
  dataset: data.Dataset
  model: nn.Module
  template: types.ServerState  # structure and dtypes of a checkpoint
  rounds: tuple[int, ...]  # rounds with a complete checkpoint, ascending


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The resolved config a run wrote to ``workdir/config.json``."""
  if not os.path.isdir(workdir):
    raise RunError(f"workdir {workdir!r} does not exist; pass the --workdir of a training run.")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise RunError(
        f"{workdir!r} has no config.json, so it is not a training run directory "
        "(train one with: python launch/main.py --config=configs/quickstart.py --workdir=DIR)."
    )
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise RunError(f"cannot read {path}: {e}") from None


def checkpoint_rounds(workdir: str) -> tuple[int, ...]:
  """Rounds with a complete checkpoint (orbax names each step's folder by its number)."""
  directory = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(directory):
    return ()
  return tuple(sorted(int(d) for d in os.listdir(directory) if d.isdigit()))


def open_run(workdir: str) -> Run:
  """Rebuilds data, model and a checkpoint template from ``workdir/config.json``.

  Raises:
    RunError: no such workdir, no config.json, or no checkpoint.
    DataError / ConfigError: the run's data cannot be loaded, or its config is invalid.
  """
  workdir = os.path.abspath(workdir)
  config = load_config(workdir)
  rounds = checkpoint_rounds(workdir)
  if not rounds:
    raise RunError(
        f"{workdir!r} has no checkpoints (expected {os.path.join(workdir, 'checkpoints')}/<round>/)"
        "; the run saves them every --config.ckpt.every rounds and at the end."
    )
  try:
    exp = experiment.build(config)
  except (AttributeError, KeyError) as e:
    raise RunError(
        f"{workdir}/config.json lacks a field this version needs ({e}); was it written by an "
        "older fedjax_med?"
    ) from None
  # The same state as train.train_and_evaluate builds; only shapes and dtypes matter here.
  return Run(workdir, exp.config, exp.dataset, exp.model, exp.initial_state(), rounds)


def restore(run: Run, round_idx: int | None = None) -> tuple[int, dict]:
  """The model variables (``{"params": ..., maybe "batch_stats": ...}``) saved at a round.

  Args:
    run: from :func:`open_run`.
    round_idx: checkpoint round; ``None`` = the latest.

  Returns:
    ``(round, variables)``.
  """
  round_idx = run.rounds[-1] if round_idx is None else round_idx
  if round_idx not in run.rounds:
    raise RunError(
        f"no checkpoint for round {round_idx} in {run.workdir}; available rounds: "
        f"{', '.join(map(str, run.rounds))}."
    )
  ckpt = checkpoint.Checkpointer(os.path.join(run.workdir, "checkpoints"))
  try:
    state = ckpt.restore(run.template, round_idx)
  finally:
    ckpt.close()
  return round_idx, jax.device_get(dict(state.params))


def eval_subset(
    dataset: data.Dataset, split: str, num_examples: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """A fixed, seeded subset of a split (all of it if smaller), in index order.

  Returns:
    ``(images [n, H, W, ch] uint8, labels [n] int32)``.
  """
  s = dataset.split(split)
  n = len(s.labels)
  if num_examples <= 0:
    raise RunError(f"--examples must be >= 1, got {num_examples}")
  if num_examples >= n:
    return s.images, s.labels
  idx = np.sort(np.random.default_rng(seed).choice(n, num_examples, replace=False))
  return s.images[idx], s.labels[idx]
