"""Sharding the client axis of a round over devices (``jax.sharding``, mesh axis ``'clients'``).

The round stays one ``jax.jit``; the call site places the server state
replicated (``P()``) and every ``ClientBatch`` leaf split on its leading client
axis (``P('clients')``). XLA inserts the cross-device sum of the weighted
deltas itself (the aggregation is a multiply + ``sum(axis=0)``). The same code
serves several hosts: call ``jax.distributed.initialize()`` first (see
``multihost.initialize``), then ``make_mesh()`` spans every process's devices;
the host batch of a round is a pure function of (seed, round), so every process
builds the same one and ``shard_clients`` (``jax.device_put``) keeps the shards
of its own devices (``fedjax_med.multihost``; tested with 2 processes on loopback,
tests/multihost_test.py). Runs vectorized together (``runs.seeds``) put a run axis
before the client axis: ``client_axis=1``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fedjax_med import types

AXIS = "clients"


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


def client_sharded(mesh: Mesh, client_axis: int = 0) -> NamedSharding:
  """Split over the mesh on axis ``client_axis`` (1 when a run axis comes first)."""
  return NamedSharding(mesh, P(*([None] * client_axis), AXIS))


def shard_clients(clients: types.ClientBatch, mesh: Mesh,
                  client_axis: int = 0) -> types.ClientBatch:
  """``device_put`` every leaf split over devices on its client axis."""
  n = clients.weight.shape[client_axis]
  if n % mesh.devices.size:
    raise ValueError(
        f"{n} clients do not divide over {mesh.devices.size} devices; "
        "pad with zero-weight clients (sharding.pad_multiple)"
    )
  return jax.device_put(clients, client_sharded(mesh, client_axis))


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))


def jit_round(round_fn, mesh: Mesh, *, donate: bool = True, client_axis: int = 0):
  """``jax.jit(round_fn)`` with the state replicated and the clients sharded
  (on axis ``client_axis`` of the batch: 1 for a ``jax.vmap``-ed round of stacked runs).

  Returns a function ``(state, clients) -> (state, metrics)``; the state
  buffers are donated (when ``donate``) so the round updates them in place.
  Metrics come back replicated (they are small).
  """
  rep, shard = replicated(mesh), client_sharded(mesh, client_axis)
  return jax.jit(
      round_fn,
      in_shardings=(rep, shard),
      out_shardings=(rep, rep),
      donate_argnums=(0,) if donate else (),
  )
