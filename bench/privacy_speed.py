"""Record-level DP round time against the same round without DP, and where the time goes.

  python bench/privacy_speed.py            # ~3.5 min on a busy 2-core CPU (half compiling)
  python bench/privacy_speed.py --quick    # cnn_tiny, tiny shapes, ~30 s

One FedAvg round of K clients, S local steps, a model of the zoo (default the
small CNN, 28x28x1, 2 classes), with the engine's default choice for this
backend (``engine.choose``: client chunk, conv lowering, unroll), four ways:

- ``plain``: no DP, B slots per step (every slot a real example);
- ``dp_same_slots``: record-level DP-SGD (``privacy.dp_sgd``) on the same B
  slots: the pure cost of per-example gradients, clipping and noise;
- ``dp_capacity``: record-level DP-SGD at the slots the trainer really uses for
  an expected batch B: ``batching.poisson_capacity`` for a client of ``n_c``
  records (default 470: PneumoniaMNIST's 4,708 over 10 clients) and the run's
  overflow bound (``privacy.plan``), on a Poisson batch
  (``batching.make_poisson_client_batch``): the end-to-end cost;
- ``client_dp``: client-level DP-FedAvg (``privacy.dp_fedavg``: each delta
  clipped, noise on the sum), B slots: should cost about a plain round.

Where the time of ``dp_same_slots`` goes, at the same shapes:

- a ladder of rounds that add one part of DP-SGD at a time, written as the
  library writes it: ``per_example`` (each example's gradient alone, ``jax.vmap``
  of ``value_and_grad`` over the slots, then the masked ``sum(axis=0)``; no
  clipping, no noise), ``clipped`` (each scaled to norm <= C before the sum),
  then ``dp_same_slots`` (the library: plus noise);
- ``dp_contracted`` / ``dp_capacity_contracted``: the same DP-SGD gradient
  (equal up to float rounding: tests/bench_privacy_test.py) with the clipped
  sum written as a contraction, ``tensordot(mask * clip_factor, per_example)``
  per leaf, instead of scaling every example's gradient and summing over them;
- the gradient alone, without the rest of the round (K x S gradients at the
  server's params, in the round's client map): ``grad`` (batched) vs
  ``grad_per_example`` (vmapped per example, contracted with the mask), and the
  part after it, K x S times on given per-example gradients:
  ``clip_sum_noise`` (as the library) and ``clip_sum_noise_contracted``.

Chunks of one client (the CPU default) run the clients one after another, so
the ratios do not depend on K there. Every workload is compiled ahead and timed
by ``bench/harness.py``: interleaved repeat by repeat, order rotated; ratios
are medians of per-repeat ratios. Prints two tables and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from bench import harness, workload  # noqa: E402
from fedjax_med import algorithms, batching, engine, partition, types  # noqa: E402
from fedjax_med.algorithms import base as alg_base  # noqa: E402
from fedjax_med.algorithms import local  # noqa: E402
from fedjax_med.privacy import dp_fedavg, dp_sgd, mechanisms  # noqa: E402

CLIP_NORM, NOISE_MULTIPLIER = 1.0, 1.0
# privacy.plan.OVERFLOW_PROBABILITY (not imported: privacy.plan pulls in ml_collections and
# dp-accounting, which timing does not need); tests/bench_privacy_test.py checks they agree.
OVERFLOW_PROBABILITY = 1e-6

ROUNDS = ("plain", "per_example", "clipped", "dp_same_slots", "dp_contracted", "dp_capacity",
          "dp_capacity_contracted", "client_dp")
GRADS = ("grad", "grad_per_example", "clip_sum_noise", "clip_sum_noise_contracted")

# What follows the per-example gradients: (per_example [B, ...], real [B] float32 mask,
# noise key, mechanism) -> the step's gradient.
Tail = Callable[[types.PyTree, types.Array, types.PRNGKey, dp_sgd.RecordDP], types.PyTree]


def capacity(batch: int, client_size: int, rounds: int, steps: int, clients: int) -> int:
  """The slots the trainer gives a record-level DP step (``privacy.plan.make``): a Poisson
  sample of expected size ``min(B, n_c)`` overflows them with probability at most
  ``OVERFLOW_PROBABILITY`` over the whole run's ``rounds * steps * clients`` samples."""
  tail = OVERFLOW_PROBABILITY / max(1, rounds * steps * clients)
  return batching.poisson_capacity(min(batch, client_size), client_size, tail)


def per_example_grads(loss_fn: types.LossFn):
  """``(params, batch [B, ...], keys [B]) -> (losses [B], grads [B, ...])``: each example
  alone (a one-example batch), as in ``dp_sgd.grad_fn``."""
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def one_example(params, example, key):
    (loss, _), grads = value_and_grad(params, jax.tree.map(lambda x: x[None], example), key)
    return loss, grads

  return jax.vmap(one_example, in_axes=(None, 0, 0))


def masked_sum(per_example: types.PyTree, real: types.Array) -> types.PyTree:
  """Sum over the example axis of the real examples, as ``dp_sgd.grad_fn`` writes it."""
  return jax.tree.map(
      lambda g: jnp.sum(g * real.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype), axis=0),
      per_example)


def summed(per_example, real, key, dp: dp_sgd.RecordDP) -> types.PyTree:
  """No clipping, no noise: the masked sum over ``dp.batch_size``."""
  del key
  return jax.tree.map(lambda g: g / dp.batch_size, masked_sum(per_example, real))


def summed_contracted(per_example, real, key, dp: dp_sgd.RecordDP) -> types.PyTree:
  """:func:`summed` as a contraction with the mask (the cheapest way to consume the
  per-example gradients on XLA:CPU: it times the gradients, not the reduction)."""
  del key
  return jax.tree.map(lambda g: jnp.tensordot(real.astype(g.dtype), g, axes=1) / dp.batch_size,
                      per_example)


def clipped(per_example, real, key, dp: dp_sgd.RecordDP) -> types.PyTree:
  """Each example clipped (``mechanisms.clip``), the masked sum over ``dp.batch_size``; no noise."""
  del key
  clipped_grads, _ = jax.vmap(lambda g: mechanisms.clip(g, dp.clip_norm))(per_example)
  return jax.tree.map(lambda g: g / dp.batch_size, masked_sum(clipped_grads, real))


def _noised(total, key, dp: dp_sgd.RecordDP) -> types.PyTree:
  noise = mechanisms.gaussian_noise(key, total,
                                    mechanisms.noise_std(dp.noise_multiplier, dp.clip_norm))
  return jax.tree.map(lambda g, z: (g + z) / dp.batch_size, total, noise)


def clip_sum_noise(per_example, real, key, dp: dp_sgd.RecordDP) -> types.PyTree:
  """DP-SGD's gradient from the per-example ones, as ``dp_sgd.grad_fn``: clip, sum, noise."""
  clipped_grads, _ = jax.vmap(lambda g: mechanisms.clip(g, dp.clip_norm))(per_example)
  return _noised(masked_sum(clipped_grads, real), key, dp)


def clip_sum_noise_contracted(per_example, real, key, dp: dp_sgd.RecordDP) -> types.PyTree:
  """:func:`clip_sum_noise` with the clipped sum as one contraction per leaf.

  The clip factor ``min(1, C / ||g_i||)`` of every example (NaN-safe norms, as
  ``mechanisms.clip``), times the mask, contracted with the per-example
  gradients: ``tensordot(factor, g, axes=1)``, a matrix-vector product, instead
  of writing every scaled gradient and reducing over the example axis.
  """
  grads = jax.tree.map(lambda g: jnp.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0),
                       per_example)
  norms = jnp.sqrt(sum(jnp.sum(jnp.square(g).reshape(g.shape[0], -1), axis=1)
                       for g in jax.tree.leaves(grads)))  # [B]
  factor = real * jnp.nan_to_num(jnp.minimum(1.0, dp.clip_norm / norms), nan=0.0, posinf=0.0)
  total = jax.tree.map(lambda g: jnp.tensordot(factor.astype(g.dtype), g, axes=1), grads)
  return _noised(total, key, dp)


def grad_fn(loss_fn: types.LossFn, tail: Tail, dp: dp_sgd.RecordDP) -> local.GradFn:
  """A ``local.GradFn``: per-example gradients of ``loss_fn`` (keys and loss as
  ``dp_sgd.grad_fn``), then ``tail`` (one of the functions above)."""
  grads_of = per_example_grads(loss_fn)

  def step_grad(params, batch, rng):
    mask = batch["mask"]
    noise_key, example_rng = jax.random.split(rng)
    losses, grads = grads_of(params, batch, jax.random.split(example_rng, mask.shape[0]))
    real = mask.astype(jnp.float32)
    loss = jnp.sum(losses * real) / jnp.maximum(jnp.sum(real), 1.0)
    return (loss, {}), tail(grads, real, noise_key, dp)

  return step_grad


def _custom_round(setup: workload.Setup, plan: algorithms.RoundPlan, step_grad: local.GradFn,
                  name: str) -> types.FederatedAlgorithm:
  """FedAvg whose every local step uses ``step_grad`` (all steps run, as under DP-SGD)."""

  def client_fn(state, data, key):
    return local.local_train(None, setup.client_tx, state.params, data, key, grad_fn=step_grad,
                             every_step=True, unroll=plan.unroll)

  return alg_base.stateless(client_fn, setup.server_tx, plan, name)


def rounds(setup: workload.Setup, plan: algorithms.RoundPlan,
           dp: dp_sgd.RecordDP, num_clients: int) -> dict[str, types.FederatedAlgorithm]:
  """The round workloads, by name (the ``ROUNDS``)."""

  def fedavg(p):
    return algorithms.fedavg(setup.loss_fn, setup.client_tx, setup.server_tx, plan=p)

  def custom(tail, name):
    return _custom_round(setup, plan, grad_fn(setup.loss_fn, tail, dp), name)

  record = plan._replace(record_dp=dp)
  client = plan._replace(client_dp=dp_fedavg.ClientDP(NOISE_MULTIPLIER, float(num_clients),
                                                      CLIP_NORM))
  contracted = custom(clip_sum_noise_contracted, "dp_contracted")
  return {
      "plain": fedavg(plan),
      "per_example": custom(summed, "per_example"),
      "clipped": custom(clipped, "clipped"),
      "dp_same_slots": fedavg(record),
      "dp_contracted": contracted,
      "dp_capacity": fedavg(record),
      "dp_capacity_contracted": contracted,
      "client_dp": fedavg(client),
  }


def gradients_alone(step_grad: local.GradFn, chunk: int | None, unroll: int):
  """``(params, data [K, S, B, ...], keys [K]) -> summed gradients``: the round's client map
  (``chunk`` clients vectorized together) and scan over steps, computing only ``step_grad``
  at ``params`` (no optimizer, no update)."""

  def one_client(params, data, key):
    def step(acc, xs):
      _, grads = step_grad(params, *xs)
      return jax.tree.map(jnp.add, acc, grads), None

    keys = jax.random.split(key, data["mask"].shape[0])
    zeros = jax.tree.map(jnp.zeros_like, params)
    return jax.lax.scan(step, zeros, (data, keys), unroll=unroll)[0]

  def run(params, data, keys):
    per_client = jax.lax.map(lambda xs: one_client(params, *xs), (data, keys), batch_size=chunk)
    return jax.tree.map(lambda x: jnp.sum(x, axis=0), per_client)

  return run


def tail_alone(tail: Tail, dp: dp_sgd.RecordDP, num_steps: int):
  """``(per_example [B, ...], real [B], key) -> gradient``: ``tail`` ``num_steps`` times (K x
  S steps), each on the given gradients times a step-dependent scale (so that the compiler
  cannot hoist the clipping out of the loop)."""

  def run(per_example, real, key):
    def step(acc, i):
      scale = 1.0 + i.astype(jnp.float32) * 1e-6
      grads = jax.tree.map(lambda g: g * scale, per_example)
      return jax.tree.map(jnp.add, acc, tail(grads, real, jax.random.fold_in(key, i), dp)), None

    zeros = jax.tree.map(lambda g: jnp.zeros(g.shape[1:], g.dtype), per_example)
    return jax.lax.scan(step, zeros, jnp.arange(num_steps))[0]

  return run


def poisson_batch(k: int, steps: int, batch: int, client_size: int, slots: int,
                  seed: int = 0) -> types.ClientBatch:
  """A host ClientBatch of K clients of ``client_size`` records each: Poisson steps of
  expected size B in ``slots`` slots (what the trainer builds under record-level DP)."""
  images, labels = workload.image_pool(k * client_size, seed)
  part = partition.iid(k * client_size, k, seed)
  return batching.make_poisson_client_batch(
      images, labels, part, np.arange(k), local_steps=steps, batch_size=batch, capacity=slots,
      seed=seed, round_idx=0)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add = p.add_argument
  add("--model", default=None, help="default cnn (--quick: cnn_tiny)")
  add("--k", type=int, default=2,
      help="clients per round (chunks of one client on CPU: the ratios do not depend on K)")
  add("--steps", type=int, default=3, help="local steps")
  add("--batch", type=int, default=32, help="B: examples per step (DP: the expected number)")
  add("--client-size", type=int, default=470,
      help="n_c, records per client (Poisson capacity); PneumoniaMNIST over 10 clients: 470")
  add("--num-clients", type=int, default=10,
      help="N, clients in the federation (the capacity's overflow bound is per run)")
  add("--rounds", type=int, default=30, help="planned rounds (idem; the config default)")
  add("--repeats", type=int, default=5,
      help="interleaved repeats (the cheap rows, ~0.1 s, need several under load)")
  add("--quick", action="store_true", help="cnn_tiny, K=2, S=2, B=4, n_c=16, 1 repeat")
  return p


def _rows(timings: harness.Timings, names, baseline: str, slots: dict, compile_s: dict):
  f = harness.fmt
  return [(n, slots[n], f(timings.median(n)), f(timings.ratio(n, baseline), ".2f"),
           f(compile_s[n], ".1f")) for n in names]


def main(argv=None) -> dict:
  args = build_parser().parse_args(argv)
  if args.quick:
    args.model = args.model or "cnn_tiny"
    args.k, args.steps, args.batch, args.client_size, args.repeats = 2, 2, 4, 16, 1
  args.model = args.model or "cnn"
  eng = engine.choose(args.k)
  setup = workload.Setup(args.model, eng.conv_impl, eng.local_unroll)
  plan = algorithms.RoundPlan(chunk_size=eng.client_chunk_size, unroll=eng.local_unroll)
  dp = dp_sgd.RecordDP(CLIP_NORM, NOISE_MULTIPLIER, args.batch)
  cap = capacity(args.batch, args.client_size, args.rounds, args.steps, args.num_clients)
  full = jax.device_put(workload.make_round_batch(args.k, args.steps, args.batch))
  sparse = jax.device_put(poisson_batch(args.k, args.steps, args.batch, args.client_size, cap))
  slots = {n: args.batch for n in ROUNDS + GRADS}
  slots.update(dp_capacity=cap, dp_capacity_contracted=cap)

  runs, compile_s = {}, {}
  for name, alg in rounds(setup, plan, dp, args.k).items():
    state = alg.init(setup.params, jax.random.key(1))
    data = sparse if name.startswith("dp_capacity") else full
    fn, compile_s[name] = harness.compile_ahead(alg.round, state, data)
    runs[name] = lambda fn=fn, state=state, data=data: fn(state, data)

  params, data = setup.params, local.client_data(full)
  keys = jax.random.split(jax.random.key(2), args.k)
  grads = {"grad": jax.value_and_grad(setup.loss_fn, has_aux=True),
           "grad_per_example": grad_fn(setup.loss_fn, summed_contracted, dp)}
  for name, step_grad in grads.items():
    fn, compile_s[name] = harness.compile_ahead(
        gradients_alone(step_grad, eng.client_chunk_size, eng.local_unroll), params, data, keys)
    runs[name] = lambda fn=fn: fn(params, data, keys)
  # The tails work on client 0's per-example gradients of step 0: the shapes are what
  # matter (the values only decide which examples get clipped, which costs the same).
  first = jax.tree.map(lambda x: x[0, 0], data)
  _, per_example = jax.jit(per_example_grads(setup.loss_fn))(
      params, first, jax.random.split(keys[0], args.batch))
  real = first["mask"].astype(jnp.float32)
  for name, tail in (("clip_sum_noise", clip_sum_noise),
                     ("clip_sum_noise_contracted", clip_sum_noise_contracted)):
    fn, compile_s[name] = harness.compile_ahead(
        tail_alone(tail, dp, args.k * args.steps), per_example, real, keys[0])
    runs[name] = lambda fn=fn: fn(per_example, real, keys[0])

  # Compiled ahead: no warm-up call (the median absorbs first-touch costs).
  timings = harness.interleave(runs, args.repeats, warmup=False)
  env = harness.environment()
  ratio = {n: timings.ratio(n, "plain") for n in ROUNDS}
  grad_ratio = {n: timings.ratio(n, "grad") for n in GRADS}
  # dp_same_slots / plain as the ladder's increments, in plain rounds.
  breakdown = {
      "per_example_grads": ratio["per_example"] - 1.0,
      "clipping": ratio["clipped"] - ratio["per_example"],
      "noise": ratio["dp_same_slots"] - ratio["clipped"],
  }
  harness.log(
      f"model={args.model} K={args.k} S={args.steps} B={args.batch} n_c={args.client_size} "
      f"capacity={cap} chunk={workload.chunk_name(eng.client_chunk_size)} "
      f"conv={eng.conv_impl} repeats={args.repeats}; {harness.describe_environment(env)}\n"
      "\nRound time, warm, median of interleaved repeats\n"
      + harness.table(("round", "slots", "median s", "vs plain", "compile s"),
                      _rows(timings, ROUNDS, "plain", slots, compile_s))
      + f"\n  dp_same_slots / plain = {harness.fmt(ratio['dp_same_slots'], '.2f')} "
      + harness.goal(ratio["dp_same_slots"], "<=3.0")
      + "\n  dp_same_slots = plain x (1 + "
      + " + ".join(f"{v:.2f} {k}" for k, v in breakdown.items()) + ")"
      + "\n\nThe gradient alone (K x S gradients at fixed params, the round's client map)"
      + " and what follows it (K x S times)\n"
      + harness.table(("part", "slots", "median s", "vs grad", "compile s"),
                      _rows(timings, GRADS, "grad", slots, compile_s)))
  result = {f"{n}_vs_plain": round(ratio[n], 3) for n in ROUNDS if n != "plain"}
  result.update({f"{n}_vs_grad": round(grad_ratio[n], 3) for n in GRADS if n != "grad"})
  result.update(
      breakdown_in_plain_rounds={k: round(v, 3) for k, v in breakdown.items()},
      model=args.model, k=args.k, steps=args.steps, batch=args.batch,
      client_size=args.client_size, capacity=cap,
      chunk=workload.chunk_name(eng.client_chunk_size), conv_impl=eng.conv_impl,
      repeats=args.repeats, seconds={n: round(timings.median(n), 4) for n in runs},
      compile_s={n: round(s, 2) for n, s in compile_s.items()}, **env)
  return harness.emit_json(result)


if __name__ == "__main__":
  main()
