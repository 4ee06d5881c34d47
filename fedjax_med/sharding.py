"""Sharding the client axis of a round over devices (``jax.sharding``, mesh axis ``'clients'``).

The round stays one ``jax.jit``; the call site places the server state
replicated (``P()``) and every ``ClientBatch`` leaf split on its leading client
axis (``P('clients')``). XLA inserts the cross-device sum of the weighted
deltas itself (the aggregation is a multiply + ``sum(axis=0)``). The same code
serves several hosts: call ``jax.distributed.initialize()`` first (see
``initialize_distributed``), then ``make_mesh()`` spans every process's devices;
the host batch of a round is a pure function of (seed, round), so every process
builds the same one and ``shard_clients`` (``jax.device_put``) keeps the shards
of its own devices. Untested here (one machine).
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fedjax_med import types

AXIS = "clients"


def initialize_distributed(**kwargs) -> None:
  """Multi-host setup: ``jax.distributed.initialize(**kwargs)`` before any JAX call.

  On a cluster (e.g. SLURM, Cloud TPU) the arguments are detected; elsewhere pass
  ``coordinator_address``, ``num_processes`` and ``process_id``. After it,
  ``jax.devices()`` lists all hosts' devices and ``make_mesh`` spans them.
  """
  jax.distributed.initialize(**kwargs)


def make_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh over the first ``num_devices`` devices (default: all) on axis ``'clients'``."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices must be in [1, {len(devices)}], got {n}")
  return Mesh(np.asarray(devices[:n]), (AXIS,))


def pad_multiple(num_clients: int, mesh: Mesh, chunk_size: int | None = None) -> int:
  """The smallest client count >= ``num_clients`` that the mesh (and chunks) divide.

  Pad the ``ClientBatch`` to it with zero-weight clients
  (``batching.make_client_batch(..., pad_clients_to=...)``).
  """
  n_dev = mesh.devices.size
  unit = n_dev if not chunk_size else int(np.lcm(n_dev, chunk_size))
  return -(-num_clients // unit) * unit


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def client_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def shard_clients(clients: types.ClientBatch, mesh: Mesh) -> types.ClientBatch:
  """``device_put`` every leaf split over devices on its client axis."""
  if clients.weight.shape[0] % mesh.devices.size:
    raise ValueError(
        f"{clients.weight.shape[0]} clients do not divide over {mesh.devices.size} devices; "
        "pad with zero-weight clients (sharding.pad_multiple)"
    )
  return jax.device_put(clients, client_sharded(mesh))


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))


def jit_round(round_fn, mesh: Mesh, *, donate: bool = True):
  """``jax.jit(round_fn)`` with the state replicated and the clients sharded.

  Returns a function ``(state, clients) -> (state, metrics)``; the state
  buffers are donated (when ``donate``) so the round updates them in place.
  Metrics come back replicated (they are small).
  """
  rep, shard = replicated(mesh), client_sharded(mesh)
  return jax.jit(
      round_fn,
      in_shardings=(rep, shard),
      out_shardings=(rep, rep),
      donate_argnums=(0,) if donate else (),
  )
