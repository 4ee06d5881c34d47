"""Working memory of the compiled round vs clients per round (deterministic, compile only).

``Compiled.memory_analysis()`` of the one-jit FedAvg round, lowered on shapes
(no data is made): the temp (working) memory at a large K over a small K at the
same chunk size. With chunking the working memory follows the chunk, not K, so
the ratio should stay near 1; the arguments (the inputs) grow with K.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from bench import harness, workload
from fedjax_med import types

_MIB = 2**20


def batch_shapes(
  k: int, steps: int, batch: int, image_shape: tuple[int, ...] = workload.IMAGE_SHAPE
) -> types.ClientBatch:
  """The shapes and dtypes of a round's ClientBatch of K clients (no data)."""
  sds = jax.ShapeDtypeStruct
  return types.ClientBatch(
    image=sds((k, steps, batch, *image_shape), jnp.uint8),
    label=sds((k, steps, batch), jnp.int32),
    mask=sds((k, steps, batch), jnp.bool_),
    weight=sds((k,), jnp.float32),
    client_id=sds((k,), jnp.int32),
  )


def default_ks(chunk: int | None) -> list[int]:
  """K=64 vs K=1024; for chunks above 64, chunk vs 16*chunk."""
  lo = 64 if chunk is None or chunk <= 64 else chunk
  return [lo, 16 * lo]


def round_memory(setup: workload.Setup, ks: Sequence[int], steps: int, batch: int, chunk) -> dict:
  """MiB of temp/argument/output memory per K, and the ratios of the last K over the first.

  The examples have ``setup.image_shape`` (28 px images, or volumes for the 3D models).
  """
  state = setup.state()
  out = {
    "method": "Compiled.memory_analysis() temp_size_in_bytes",
    "chunk": workload.chunk_name(chunk),
    "ks": list(ks),
  }
  for k in ks:
    shapes = batch_shapes(k, steps, batch, setup.image_shape)
    compiled, _ = setup.compile_round(chunk, state, shapes)
    ma = compiled.memory_analysis()
    if ma is None:
      return {"method": "unavailable"}
    out[str(k)] = {
      "temp_mib": ma.temp_size_in_bytes / _MIB,
      "argument_mib": ma.argument_size_in_bytes / _MIB,
      "output_mib": ma.output_size_in_bytes / _MIB,
    }
  lo, hi = out[str(ks[0])], out[str(ks[-1])]
  out["temp_ratio"] = hi["temp_mib"] / max(lo["temp_mib"], 1e-9)
  out["argument_ratio"] = hi["argument_mib"] / max(lo["argument_mib"], 1e-9)
  return out


def describe(model: str, m: dict) -> str:
  """One line: temp memory at the two K and the ratio against its goal (<= 1.2)."""
  if "temp_ratio" not in m:
    return f"  {model}: {m}"
  lo, hi = m["ks"][0], m["ks"][-1]
  a, b = m[str(lo)], m[str(hi)]
  return (
    f"  {model} (chunk {m['chunk']}): temp {a['temp_mib']:.1f} MiB at K={lo} -> "
    f"{b['temp_mib']:.1f} MiB at K={hi}: ratio {m['temp_ratio']:.2f} "
    f"{harness.goal(m['temp_ratio'], '<=1.2')}; arguments (the inputs, scale with K) "
    f"{a['argument_mib']:.1f} -> {b['argument_mib']:.1f} MiB"
  )
