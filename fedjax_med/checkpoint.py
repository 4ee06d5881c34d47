"""Atomic, self-checking, resumable checkpoints of the ``ServerState`` with orbax.

Orbax writes each step into a temporary directory and renames it when
complete, so a killed run leaves either a whole checkpoint or none. On top of
that every saved step's files get a SHA-256 digest (``checksums.json``, written
atomically): ``restore`` verifies it, and a latest checkpoint that is missing,
empty, torn, altered or does not fit the run's state is skipped with one
warning (and deleted, so the run saves that round again) in favour of the
newest valid one. Only when no checkpoint is valid does restoring fail, with
one message.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil

import jax
import orbax.checkpoint as ocp

from fedjax_med import errors, metrics, types

log = logging.getLogger(__name__)
CHECKSUMS = "checksums.json"


class CheckpointError(errors.UserError):
  """No valid checkpoint to restore."""


def digest(directory: str) -> str:
  """SHA-256 over every file below ``directory`` (relative paths and contents, sorted)."""
  h = hashlib.sha256()
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    for name in sorted(files):
      path = os.path.join(root, name)
      h.update(os.path.relpath(path, directory).encode() + b"\0")
      with open(path, "rb") as f:
        for block in iter(lambda f=f: f.read(1 << 20), b""):
          h.update(block)
  return h.hexdigest()


class Checkpointer:
  """Saves and restores ``ServerState`` under ``workdir/checkpoints``."""

  def __init__(self, directory: str, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        ),
    )

  def latest_round(self) -> int | None:
    return self._manager.latest_step()

  def _checksums(self) -> dict[str, str]:
    path = os.path.join(self.directory, CHECKSUMS)
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def save(self, state: types.ServerState) -> None:
    step = int(jax.device_get(state.round))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    kept = {str(s) for s in self._manager.all_steps()}
    sums = {k: v for k, v in self._checksums().items() if k in kept}
    sums[str(step)] = digest(os.path.join(self.directory, str(step)))
    metrics.write_json_atomic(os.path.join(self.directory, CHECKSUMS), sums)

  def _restore_step(self, template: types.ServerState, step: int) -> types.ServerState:
    expected = self._checksums().get(str(step))
    folder = os.path.join(self.directory, str(step))
    if expected is None or not os.path.isdir(folder) or digest(folder) != expected:
      why = "has no checksum" if expected is None else "does not match its checksum"
      raise CheckpointError(f"checkpoint {step} in {self.directory} {why} (damaged or "
                            "written by another version)")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except ValueError as e:  # orbax: the saved tree does not match this run's state
      raise errors.CheckpointMismatchError(
          f"the checkpoint at step {step} in {self.directory} does not match this run's state "
          "(another algorithm or model, or a checkpoint written before the per-client-state "
          "redesign of the server state); use a new --workdir. "
          f"Orbax said: {str(e).splitlines()[0]}"
      ) from None
    # Orbax returns the template's containers; keep the exact NamedTuple types.
    return jax.tree.unflatten(jax.tree.structure(template), jax.tree.leaves(restored))

  def restore(self, template: types.ServerState, step: int | None = None) -> types.ServerState:
    """Restores ``step``, or (``None``) the newest valid checkpoint, into ``template``'s structure.

    Raises:
      CheckpointError: the requested step, or (``step=None``) every step, is damaged, or
        the checkpoints predate checksums.
      errors.CheckpointMismatchError: a checkpoint is intact but does not fit ``template``.
    """
    if step is not None:
      return self._restore_step(template, step)
    steps = sorted(self._manager.all_steps(), reverse=True)
    if steps and not os.path.exists(os.path.join(self.directory, CHECKSUMS)):
      # Written by a fedjax_med without checksums: not ours to judge (or delete).
      raise CheckpointError(
          f"the checkpoints in {self.directory} have no {CHECKSUMS} (written by an older "
          "fedjax_med); rerun with --fresh to start over")
    for s in steps:
      try:
        return self._restore_step(template, s)
      except errors.CheckpointMismatchError:
        raise  # intact but of another state layout: a wrong workdir, never deleted
      except (CheckpointError, OSError, KeyError) as e:  # damaged: skip and save it again
        log.warning("skipping checkpoint %d: %s", s, str(e).splitlines()[0])
        self._discard(s)
    raise CheckpointError(
        f"no valid checkpoint in {self.directory} (of {len(steps)}); rerun with --fresh to "
        "start over")

  def _discard(self, step: int) -> None:
    """Deletes an invalid step so that the run saves that round again."""
    try:
      self._manager.delete(step)
    except Exception:  # noqa: BLE001 - a damaged folder may confuse orbax; remove it by hand
      shutil.rmtree(os.path.join(self.directory, str(step)), ignore_errors=True)
      self._manager.reload()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
