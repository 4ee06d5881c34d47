"""Atomic, resumable checkpoints of the ``ServerState`` with orbax.

Orbax writes each step into a temporary directory and renames it when
complete, so a killed run leaves either a whole checkpoint or none; restoring
picks the latest complete step.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from fedjax_med import errors, types


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

  def save(self, state: types.ServerState) -> None:
    step = int(jax.device_get(state.round))
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(state))
    self._manager.wait_until_finished()

  def restore(self, template: types.ServerState, step: int | None = None) -> types.ServerState:
    """Restores ``step`` (default: latest) into the structure of ``template``."""
    step = self.latest_round() if step is None else step
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

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
