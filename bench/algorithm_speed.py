"""Round time of every algorithm relative to FedAvg (the overhead of the method).

  PYTHONPATH=. python bench/algorithm_speed.py            # ~3 min on a 2-core CPU
  PYTHONPATH=. python bench/algorithm_speed.py --quick    # tiny model, seconds

Same model, data, K clients, S local steps of batch B for every algorithm; each
round is jitted and compiled before timing; the algorithms are timed
interleaved, repeat by repeat (order rotated), and each repeat's time is
divided by that repeat's FedAvg time. Prints a table and, last, one JSON line
``{"<name>_vs_fedavg": ratio, ...}``. FedBN needs BatchNorm, so every algorithm
runs the BatchNorm ResNet in the ``--bn`` table and FedBN is skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(_BENCH), _BENCH]

import jax  # noqa: E402
import optax  # noqa: E402
import round_speed  # noqa: E402

from fedjax_med import algorithms, engine, models, tasks  # noqa: E402


def build(name: str, loss_fn, num_clients: int, chunk):
  client_tx, lr = optax.sgd(0.05), 0.05
  sgd1 = optax.sgd(1.0)
  common = dict(client_chunk_size=chunk)
  return {
      "fedavg": lambda: algorithms.fedavg(loss_fn, client_tx, sgd1, **common),
      "fedadam": lambda: algorithms.fedavg(loss_fn, client_tx, optax.adam(0.01), **common),
      "fedprox": lambda: algorithms.fedprox(loss_fn, client_tx, sgd1, mu=0.01, **common),
      "fedsam": lambda: algorithms.fedsam(loss_fn, client_tx, sgd1, rho=0.05, **common),
      "fedasam": lambda: algorithms.fedsam(loss_fn, client_tx, sgd1, rho=0.5, adaptive=True,
                                           **common),
      "scaffold": lambda: algorithms.scaffold(loss_fn, lr, sgd1, num_clients=num_clients, **common),
      "feddyn": lambda: algorithms.feddyn(loss_fn, client_tx, alpha=0.01, num_clients=num_clients,
                                          **common),
      "fedbn": lambda: algorithms.fedbn(loss_fn, client_tx, sgd1, num_clients=num_clients,
                                        **common),
      "fedavg+swa": lambda: algorithms.swa(algorithms.fedavg(loss_fn, client_tx, sgd1, **common),
                                           start_round=1),
  }[name]()


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="cnn")
  p.add_argument("--k", type=int, default=16, help="clients per round")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--chunk", default="auto",
                 help="client chunk: 'auto' (engine's choice for this backend), 'all' or an int")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--quick", action="store_true", help="cnn_tiny, K=4, S=2, B=8, 1 repeat")
  args = p.parse_args(argv)
  if args.quick:
    args.model, args.k, args.steps, args.batch, args.repeats = "cnn_tiny", 4, 2, 8, 1
  if args.chunk == "auto":
    chunk = engine.choose(args.k).client_chunk_size
  else:
    chunk = None if args.chunk == "all" else int(args.chunk)
  model = models.get_model(args.model, 2)
  bn = getattr(model, "norm", None) == "batch"
  loss_fn = tasks.make_loss_fn(model)
  params = tasks.init_variables(model, jax.random.PRNGKey(0), round_speed.IMAGE_SHAPE)
  batch = jax.device_put(round_speed.make_round_batch(args.k, args.steps, args.batch))
  names = ["fedavg", "fedadam", "fedprox", "fedsam", "fedasam", "scaffold", "feddyn",
           "fedavg+swa"] + (["fedbn"] if bn else [])
  runs, compile_s = {}, {}
  for name in names:
    alg = build(name, loss_fn, args.k, chunk)
    t = time.perf_counter()
    fn = jax.jit(alg.round).lower(alg.init(params, jax.random.PRNGKey(1)), batch).compile()
    compile_s[name] = time.perf_counter() - t
    runs[name] = (fn, alg.init(params, jax.random.PRNGKey(1)))
    jax.block_until_ready(fn(runs[name][1], batch))  # warm
  times = {n: [] for n in names}
  for r in range(args.repeats):
    order = names[r % len(names):] + names[: r % len(names)]
    for name in order:
      fn, state = runs[name]
      t = time.perf_counter()
      jax.block_until_ready(fn(state, batch))
      times[name].append(time.perf_counter() - t)
  ratios = {n: statistics.median(a / b for a, b in zip(times[n], times["fedavg"], strict=True))
            for n in names}
  print(f"model={args.model} K={args.k} S={args.steps} B={args.batch} chunk={chunk or 'all'} "
        f"backend={jax.default_backend()} repeats={args.repeats}")
  print(f"{'algorithm':<12} {'round s':>9} {'vs fedavg':>10} {'compile s':>10}")
  for n in names:
    print(f"{n:<12} {statistics.median(times[n]):>9.3f} {ratios[n]:>10.2f} {compile_s[n]:>10.1f}")
  result = {f"{n}_vs_fedavg": round(ratios[n], 3) for n in names}
  result.update(model=args.model, k=args.k, backend=jax.default_backend())
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
