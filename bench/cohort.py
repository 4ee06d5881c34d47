"""A large cohort: host batch building vs the round at 1,000 of 10,000 clients.

Each client holds ~5 synthetic examples (iid). Per round the host samples the
clients and stacks their padded batch (``batching``), puts it on the device,
and the compiled round runs; the three are timed per round (medians) to show
whether host batching keeps up with the device.
"""

from __future__ import annotations

import jax

from bench import harness, workload
from fedjax_med import batching, partition


def large_cohort(
  setup: workload.Setup,
  chunk,
  repeats: int,
  n_examples=50_000,
  num_clients=10_000,
  per_round=1_000,
  steps=5,
  batch=8,
) -> dict:
  """Median seconds of batch building, ``device_put`` and the round, over ``repeats`` rounds."""
  images, labels = workload.image_pool(n_examples, 7)
  partition_s, part = harness.time_call(
    lambda: partition.iid(n_examples, num_clients, 0), block=lambda x: x)

  def build(r):
    ids = batching.sample_clients(num_clients, per_round, 0, r)
    return batching.make_client_batch(
      images, labels, part, ids, local_steps=steps, batch_size=batch, seed=0, round_idx=r
    )

  state = setup.state()
  compiled, compile_s = setup.compile_round(chunk, state, jax.device_put(build(0)))
  jax.block_until_ready(compiled(state, jax.device_put(build(0))))  # warm
  build_t, put_t, round_t = [], [], []
  for r in range(1, repeats + 1):  # in sequence, not interleaved: each stage feeds the next
    seconds, host = harness.time_call(lambda r=r: build(r), block=lambda x: x)
    build_t.append(seconds)
    put_t.append(harness.time_call(lambda h=host: jax.device_put(h))[0])
    dev = jax.device_put(host)
    round_t.append(harness.time_call(lambda d=dev: compiled(state, d))[0])
  out = {
    "examples": n_examples,
    "num_clients": num_clients,
    "clients_per_round": per_round,
    "steps": steps,
    "batch": batch,
    "model": setup.name,
    "chunk": workload.chunk_name(chunk),
    "partition_s": partition_s,
    "compile_s": compile_s,
    "batch_build_s": harness.median(build_t),
    "device_put_s": harness.median(put_t),
    "round_s": harness.median(round_t),
  }
  out["build_over_round"] = out["batch_build_s"] / out["round_s"]
  return out


def describe(lg: dict) -> str:
  """Two lines for the human report."""
  return (
    f"Large cohort ({lg['model']}, chunk {lg['chunk']}): {lg['clients_per_round']} of "
    f"{lg['num_clients']} clients per round, {lg['examples']} synthetic 28x28 gray examples "
    f"(~{lg['examples'] // lg['num_clients']} each, iid), S={lg['steps']}, B={lg['batch']}\n"
    f"  host sample_clients+make_client_batch {lg['batch_build_s']:.3f} s, device_put "
    f"{lg['device_put_s']:.3f} s, round {lg['round_s']:.3f} s -> host batching = "
    f"{100 * lg['build_over_round']:.1f}% of the round (and train.py prefetches it in a "
    f"thread during the previous round); partition {lg['partition_s']:.2f} s once, "
    f"compile {lg['compile_s']:.1f} s"
  )
