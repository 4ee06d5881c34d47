"""Automatic choice of how a round executes: client chunk, conv lowering, scan unroll.

The defaults come from measurements (``bench/round_speed.py``; STYLE.md §11):
on XLA:CPU the arithmetic dominates, vmapped native convolutions are slow and
vectorizing many clients at once is memory-bound, so small chunks of clients
with the im2col lowering win; on GPUs a per-client loop is dispatch-bound and
large vectorized chunks fill the device. Any explicit config value wins over
the automatic one; the resolved choice is logged and written to ``summary.json``.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import jax

from fedjax_med.models import layers

log = logging.getLogger(__name__)

# Clients vectorized together when ``fl.client_chunk_size`` is 0 (auto).
# CPU: measured by bench/round_speed.py (chunk tuning at K=16): one client at a
# time was fastest per client for both the CNN (57.7 ms vs 82 / 138 / 140 for
# chunks of 4 / 8 / all) and ResNet-8-GN (313 ms vs 343 / 433 / 533).
# GPU: large vectorized chunks; bench/gpu.sh tunes 128..1024 (not yet measured).
AUTO_CHUNK = {"cpu": 1, "gpu": 1024, "tpu": 1024}


# Runs that differ only in their seed trained in one process, vectorized over a run axis
# (``runs.seeds``), rather than each in its own process: where bench/many_runs.py measured
# it faster. 2-core CPU, 4 seeds of a small run (cnn_tiny, 10 rounds, compilation cache on):
# one vectorized process 19.3 s vs 4 processes one at a time 29.6 s (1.54x faster) but vs
# 2 at a time 15.8 s (0.82x): vectorize when the sweep runs one job at a time. The round
# alone is at parity on CPU (0.91-0.96x). GPU / TPU: yes (a small model leaves most of an
# accelerator idle; not yet measured on one here).
AUTO_VECTORIZE_SEEDS = {"gpu": True, "tpu": True}  # cpu: by the number of jobs (above)


def vectorize_seeds(backend: str, jobs: int = 1) -> bool:
  """Whether a sweep of ``jobs`` processes at a time trains each group of seeds in one
  vectorized process on ``backend`` (see ``AUTO_VECTORIZE_SEEDS``)."""
  if backend == "cpu":
    return jobs <= 1
  return AUTO_VECTORIZE_SEEDS.get(backend, False)


class Engine(NamedTuple):
  client_chunk_size: int | None  # None = all clients at once
  conv_impl: str  # "native" | "im2col"
  local_unroll: int  # lax.scan unroll of local steps
  backend: str
  num_devices: int


def choose(
    clients_per_round: int,
    *,
    client_chunk_size: int = 0,
    conv_impl: str = "auto",
    local_unroll: int = 0,
    backend: str | None = None,
    num_devices: int | None = None,
) -> Engine:
  """Resolves 0 / ``"auto"`` settings for this backend.

  Args:
    clients_per_round: clients in one round (before padding).
    client_chunk_size: 0 = auto; n >= 1 = n clients vectorized together per
      device group (n >= clients means all at once).
    conv_impl: ``"auto"``, ``"native"`` or ``"im2col"``.
    local_unroll: 0 = auto (1: a rolled ``lax.scan``); n >= 1 explicit.
    backend: default ``jax.default_backend()``.
    num_devices: default ``jax.device_count()``.
  """
  backend = backend or jax.default_backend()
  num_devices = num_devices or jax.device_count()
  if client_chunk_size == 0:
    # Chunk is per round; with D devices each device vectorizes chunk / D clients.
    client_chunk_size = AUTO_CHUNK.get(backend, AUTO_CHUNK["cpu"]) * num_devices
    # Balance the chunks so padding stays small: 10 clients at most 8 a chunk
    # run as 2 chunks of 5, not 8 + 8 with 6 padding clients.
    num_chunks = -(-clients_per_round // client_chunk_size)
    client_chunk_size = -(-clients_per_round // num_chunks)
    client_chunk_size = -(-client_chunk_size // num_devices) * num_devices
  chunk = None if client_chunk_size >= clients_per_round else client_chunk_size
  if conv_impl == "auto":
    conv_impl = "im2col" if backend == "cpu" else "native"
  layers.resolve_impl(conv_impl)  # validates
  engine = Engine(chunk, conv_impl, local_unroll or 1, backend, num_devices)
  log.info(
      "engine: backend=%s devices=%d client_chunk=%s conv=%s unroll=%d",
      backend, num_devices, "all" if chunk is None else chunk, conv_impl, engine.local_unroll,
  )
  return engine
