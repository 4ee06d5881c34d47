"""Atomic, self-checking, resumable checkpoints of the ``ServerState`` with orbax.

Orbax writes each step into a temporary directory and renames it when
complete, so a killed run leaves either a whole checkpoint or none. On top of
that every saved step's files get a SHA-256 digest (``checksums.json``, written
atomically): ``restore`` verifies it, and a latest checkpoint that is missing,
empty, torn, altered or does not fit the run's state is skipped with one
warning (and deleted, so the run saves that round again) in favour of the
newest valid one. Only when no checkpoint is valid does restoring fail, with
one message.

Crash safety: ``checksums.json`` is created (empty) with the checkpoint folder, so
a step that a kill left without its digest is recognised as damaged, not as a
checkpoint of an older fedjax_med; old steps are deleted only after the new
step's digest is on disk (orbax's own ``max_to_keep`` would delete them first).

Several processes (``fedjax_med.multihost``): every process calls ``save`` and
``restore`` (orbax's saves and deletes are collective; each process reads the arrays
of its own devices); process 0 alone writes ``checksums.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal

import jax
import orbax.checkpoint as ocp

from fedjax_med import errors, metrics, multihost, types

log = logging.getLogger(__name__)
CHECKSUMS = "checksums.json"
KILL_ENV = "FEDJAX_MED_TEST_KILL_AT"


def kill_point(name: str, round_idx: int) -> None:
  """Test hook of the kill -9 tests: SIGKILLs this process when ``$FEDJAX_MED_TEST_KILL_AT``
  is ``"<name>:<round_idx>"``; does nothing when it is unset or names another point.

  Points: ``save`` (checkpoint written by orbax, its digest not yet), ``eval`` (the
  evaluation's val record written, its test record not yet), ``summary`` (everything
  but ``summary.json`` done).
  """
  if os.environ.get(KILL_ENV) == f"{name}:{round_idx}":
    os.kill(os.getpid(), signal.SIGKILL)


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
    self.max_to_keep = max_to_keep
    # Retention is ours (``save``): orbax would delete old steps before the new digest exists.
    # ``cleanup_tmp_directories``: remove the temporary folder of a save that a kill cut short.
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=None, create=True, enable_async_checkpointing=False,
            cleanup_tmp_directories=True,
        ),
    )
    if (multihost.is_lead() and not self._manager.all_steps()
        and not os.path.exists(self._checksums_path())):
      metrics.write_json_atomic(self._checksums_path(), {})
    multihost.barrier("fedjax_med_checksums_init")

  def latest_round(self) -> int | None:
    return self._manager.latest_step()

  def _checksums_path(self) -> str:
    return os.path.join(self.directory, CHECKSUMS)

  def _checksums(self) -> dict[str, str]:
    try:
      with open(self._checksums_path()) as f:
        return json.load(f)
    except (OSError, ValueError):
      return {}

  def save(self, state: types.ServerState) -> None:
    step = int(jax.device_get(state.round))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()
    kill_point("save", step)
    lead = multihost.is_lead()
    sums = self._checksums()
    if lead:
      sums[str(step)] = digest(os.path.join(self.directory, str(step)))
      metrics.write_json_atomic(self._checksums_path(), sums)
    multihost.barrier("fedjax_med_checksums_saved")
    # Only now drop the oldest steps (a kill in between leaves one more, never one less).
    steps = sorted(self._manager.all_steps())
    if self.max_to_keep:
      for old in steps[:-self.max_to_keep]:
        self._manager.delete(old)
      kept = {str(s) for s in steps[-self.max_to_keep:]}
      if lead:
        metrics.write_json_atomic(self._checksums_path(),
                                  {k: v for k, v in sums.items() if k in kept})

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

    With ``step=None``, a newest step without a checksum (a save cut short) is deleted
    first; if it was the only one, ``template`` itself is returned (nothing to resume).

    Raises:
      CheckpointError: the requested step, or (``step=None``) every step, is damaged, or
        the checkpoints predate checksums.
      errors.CheckpointMismatchError: a checkpoint is intact but does not fit ``template``.
    """
    if step is not None:
      return self._restore_step(template, step)
    steps = sorted(self._manager.all_steps(), reverse=True)
    if steps and not os.path.exists(self._checksums_path()):
      # Written by a fedjax_med without checksums: not ours to judge (or delete).
      raise CheckpointError(
          f"the checkpoints in {self.directory} have no {CHECKSUMS} (written by an older "
          "fedjax_med); rerun with --fresh to start over")
    if steps and str(steps[0]) not in self._checksums():
      # Saves write the digest last: the newest step without one is a save cut short.
      log.warning("discarding checkpoint %d: its save was interrupted before its checksum "
                  "was written", steps[0])
      self._discard(steps.pop(0))
      if not steps:
        return template  # no checkpoint had been completed: start over
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

  def complete_steps(self) -> list[int]:
    """The steps whose save finished (their checksum is recorded), oldest first; a newest
    step without one (a save cut short) is discarded first, as :meth:`restore` does."""
    steps = sorted(self._manager.all_steps())
    sums = self._checksums()
    if steps and str(steps[-1]) not in sums:
      log.warning("discarding checkpoint %d: its save was interrupted before its checksum "
                  "was written", steps[-1])
      self._discard(steps.pop())
    return [s for s in steps if str(s) in sums]

  def discard_after(self, step: int) -> None:
    """Deletes every step after ``step`` (so that the run saves those rounds again)."""
    for s in sorted(self._manager.all_steps()):
      if s > step:
        self._discard(s)

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
