"""Several processes, one run: JAX's multi-controller setup for ``fedjax-med-train``.

Every process runs the same command. After :func:`initialize`, ``jax.devices()``
lists the devices of all processes, the round's client mesh spans them
(``sharding.make_mesh``), and every process builds the same host batch (a pure
function of seed and round) of which ``jax.device_put`` keeps its own shards.
Process 0 (:func:`is_lead`) alone writes the workdir's files (config, metrics,
summary, TensorBoard) and evaluates; every process takes part in the round and in
saving and restoring checkpoints (orbax's multi-process support).

How the processes find each other (``--coordinator_address``, ``--num_processes``,
``--process_id`` flags of ``fedjax-med-train``, or JAX's own variables
``JAX_COORDINATOR_ADDRESS`` ...); on SLURM, Open MPI and cloud TPU JAX detects them
(``--distributed`` with no address). On CPU the processes' collectives run over
TCP with gloo (:data:`CPU_COLLECTIVES`), e.g. on 127.0.0.1 for a test on one machine.
"""

from __future__ import annotations

import logging
import socket
import time

import jax

log = logging.getLogger(__name__)

CPU_COLLECTIVES = "gloo"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, cpu_devices: int = 0,
               timeout_s: int = 300) -> None:
  """``jax.distributed.initialize`` with CPU collectives over gloo; call before any JAX op.

  Args:
    coordinator_address: ``host:port`` of process 0 (``None``: detected on a cluster,
      or ``$JAX_COORDINATOR_ADDRESS``).
    num_processes, process_id: ``None``: detected.
    cpu_devices: > 0: this process exposes that many CPU devices
      (``jax_num_cpu_devices``; a CPU-only test of a multi-device mesh).
    timeout_s: how long to wait for every process to join.
  """
  if cpu_devices > 0:
    jax.config.update("jax_num_cpu_devices", cpu_devices)
  jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=timeout_s)
  log.info("process %d of %d; %d local and %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())


def wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Waits until ``host:port`` accepts TCP connections (process 0 started the run).

  JAX aborts the process when the coordinator cannot be reached; checking first turns
  that into one clear error.

  Raises:
    ConnectionError: not reachable within ``timeout_s`` seconds, or a malformed address.
  """
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise ConnectionError(f"--coordinator_address={address!r} is not host:port")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
        return
    except OSError as e:
      if time.monotonic() >= deadline:
        raise ConnectionError(f"the coordinator {address} is not reachable after "
                              f"{timeout_s:g} s ({e.strerror or e})") from None
      time.sleep(0.5)


def is_lead() -> bool:
  """True in the process that writes the run's files (process 0; always when alone)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches ``barrier(name)`` (no-op in one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def to_local(tree):
  """``tree`` as host numpy arrays when the run spans processes, else ``tree`` itself.

  A replicated global array spans devices that this process cannot address; its host
  copy feeds this process's own jitted evaluation (which then runs on a local device).
  """
  if jax.process_count() == 1:
    return tree
  return jax.device_get(tree)
