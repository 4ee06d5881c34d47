"""Cost of the sharpness metrics relative to one epoch of training on the same examples.

  PYTHONPATH=. python bench/analysis_speed.py        # resnet8_gn, 28 px, 1000 examples (minutes)
  PYTHONPATH=. python bench/analysis_speed.py --model=cnn_tiny --examples=64 \
      --lanczos-iters=3 --probes=4 --repeats=1          # smoke test, seconds

Times, side by side on the same N examples: one epoch of training (N / 32
SGD steps of batch 32 in one jitted ``lax.scan``), one eval-mode loss pass,
``lambda_max`` by Lanczos (``--lanczos-iters`` HVPs) and the Hutchinson trace
(``--probes`` HVPs), each loss over all N examples in batches of
``--eval-batch`` (``analysis.objective``). Everything is compiled before
timing (compile seconds are reported apart) and called once to warm up; the
repeats interleave the workloads (``bench/harness.py``) and each ratio is the
median over repeats of (metric time / that repeat's epoch time). The goal is
lambda_max <= 10 epochs. Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from bench import harness  # noqa: E402
from fedjax_med import models, tasks  # noqa: E402
from fedjax_med.analysis import lanczos, objective, trace  # noqa: E402

GOAL_LAMBDA_MAX_VS_EPOCH = 10.0


def _epoch_fn(model, lr: float):
  loss_fn = tasks.make_loss_fn(model)
  tx = optax.sgd(lr)

  def step(carry, batch):
    params, opt_state, rng = carry
    rng, step_rng = jax.random.split(rng)
    (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, step_rng)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, rng), loss

  @jax.jit
  def epoch(variables, batches):  # batches: [steps, B, ...]
    carry = (variables, tx.init(variables), jax.random.PRNGKey(0))
    (variables, _, _), losses = jax.lax.scan(step, carry, batches)
    return variables, losses

  return epoch


def _analysis_fns(model, eval_batch: int, lanczos_iters: int, lanczos_tol: float, probes: int,
                  probe_batch: int, remat: bool):
  def loss_of(state, images, labels):
    return objective.eval_loss_fn(model, images, labels, eval_batch, model_state=state, remat=remat)

  @jax.jit
  def loss(params, state, images, labels, key):
    del key
    return loss_of(state, images, labels)(params)

  @jax.jit
  def lambda_max(params, state, images, labels, key):
    return lanczos.lambda_max(loss_of(state, images, labels), params, key, lanczos_iters)

  @jax.jit
  def lambda_max_tol(params, state, images, labels, key):
    result, _ = lanczos.hessian_lanczos(loss_of(state, images, labels), params, key,
                                        lanczos_iters, lanczos_tol)
    return lanczos.ritz(result)[0][-1], result.num_steps

  @jax.jit
  def hutchinson(params, state, images, labels, key):
    return trace.hutchinson(loss_of(state, images, labels), params, key, probes, probe_batch)[:2]

  fns = {"eval_loss": loss, "lambda_max": lambda_max, "trace": hutchinson}
  if lanczos_tol > 0:
    fns["lambda_max_tol"] = lambda_max_tol
  return fns


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="resnet8_gn")
  p.add_argument("--size", type=int, default=28, help="image side (px), 1 channel")
  p.add_argument("--examples", type=int, default=1000)
  p.add_argument("--train-batch", type=int, default=32)
  p.add_argument("--eval-batch", type=int, default=250)
  p.add_argument("--lanczos-iters", type=int, default=20)
  p.add_argument("--lanczos-tol", type=float, default=1e-3,
                 help="also time Lanczos stopped early at this relative change (0: skip)")
  p.add_argument("--probes", type=int, default=100)
  p.add_argument("--probe-batch", type=int, default=1, help="Hutchinson probes vmapped together")
  p.add_argument("--no-remat", action="store_true", help="keep every batch's activations")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--lr", type=float, default=0.05)
  args = p.parse_args(argv)

  rng = np.random.default_rng(0)
  n = args.examples
  images = rng.integers(0, 256, size=(n, args.size, args.size, 1), dtype=np.uint8)
  labels = rng.integers(0, 2, size=(n,)).astype(np.int32)
  steps = n // args.train_batch
  if steps < 1:
    raise SystemExit(f"--examples={n} is less than one --train-batch={args.train_batch}")
  m = steps * args.train_batch
  batches = jax.device_put({
      "image": images[:m].reshape(steps, args.train_batch, *images.shape[1:]),
      "label": labels[:m].reshape(steps, args.train_batch),
      "mask": np.ones((steps, args.train_batch), bool),
  })
  images, labels = jax.device_put((images, labels))

  model = models.get_model(args.model, 2)
  variables = tasks.init_variables(model, jax.random.PRNGKey(0), images.shape[1:])
  params, state = objective.split_variables(variables)
  key = jax.random.PRNGKey(1)
  work = {"epoch": (_epoch_fn(model, args.lr), (variables, batches))}
  for name, fn in _analysis_fns(model, args.eval_batch, args.lanczos_iters, args.lanczos_tol,
                                args.probes, args.probe_batch, not args.no_remat).items():
    work[name] = (fn, (params, state, images, labels, key))

  runs, compile_s = {}, {}
  for name, (fn, fn_args) in work.items():
    compiled, compile_s[name] = harness.compile_ahead(fn, *fn_args)
    runs[name] = lambda compiled=compiled, fn_args=fn_args: compiled(*fn_args)
  timings = harness.interleave(runs, args.repeats)
  ratio = {k: timings.ratio(k, "epoch") for k in runs}
  seconds = {k: timings.median(k) for k in runs}
  outputs = timings.outputs

  env = harness.environment()
  num_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
  harness.log(f"model={args.model} {args.size}px params={num_params} examples={n} "
              f"(epoch: {steps} steps of {args.train_batch}; eval batch {args.eval_batch}) "
              f"lanczos={args.lanczos_iters} probes={args.probes} remat={not args.no_remat} "
              f"repeats={args.repeats}; {harness.describe_environment(env)}\n"
              + harness.ratio_table(timings, "epoch", compile_s))
  per_hvp = seconds["lambda_max"] / max(args.lanczos_iters, 1)
  result = {
      "lambda_max_vs_epoch": round(ratio["lambda_max"], 3),
      "trace_vs_epoch": round(ratio["trace"], 3),
      "eval_loss_vs_epoch": round(ratio["eval_loss"], 3),
      "hvp_vs_epoch": round(per_hvp / seconds["epoch"], 3),
      "lambda_max": float(outputs["lambda_max"]),
      "meets_goal": ratio["lambda_max"] <= GOAL_LAMBDA_MAX_VS_EPOCH,
      "goal_lambda_max_vs_epoch": GOAL_LAMBDA_MAX_VS_EPOCH,
      "seconds": {k: round(v, 4) for k, v in seconds.items()},
      "compile_s": {k: round(v, 2) for k, v in compile_s.items()},
      "model": args.model, "examples": n, "lanczos_iters": args.lanczos_iters,
      "probes": args.probes, "num_params": num_params, "remat": not args.no_remat,
      **env,
  }
  if "lambda_max_tol" in ratio:
    value, steps_taken = outputs["lambda_max_tol"]
    result.update(lambda_max_tol_vs_epoch=round(ratio["lambda_max_tol"], 3),
                  lanczos_tol=args.lanczos_tol, lanczos_tol_steps=int(steps_taken),
                  lambda_max_tol=float(value),
                  meets_goal_with_tol=ratio["lambda_max_tol"] <= GOAL_LAMBDA_MAX_VS_EPOCH)
  return harness.emit_json(result)


if __name__ == "__main__":
  main()
