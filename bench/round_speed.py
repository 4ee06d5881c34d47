"""Round speed: the one-jit FedAvg round vs a per-client loop vs centralized SGD.

  python bench/round_speed.py            # ~6-8 min on an idle 2-core CPU (10 min under load)
  python bench/round_speed.py --quick    # ~1 min smoke run (cnn, K=8)
  python bench/round_speed.py --large    # + 1,000 of 10,000 clients: host batching vs round
  bash bench/gpu.sh                      # the prepared GPU run (K up to 4096)

The chunk (``client_chunk_size``) is tuned per model first (``--chunk auto``):
the warm round at K=``--tune-k`` for each ``--chunk-candidates`` is printed and
the fastest is used for every K of that model (on XLA:CPU chunk 1 wins: vmapped
clients run as batched matmuls that are slower per client than plain ones).
On CPU resnet* runs only K <= 16 (``--resnet-max-k``) to fit the time budget.

For each model and each K (clients per round), on synthetic uint8 28x28 gray
images (2 classes), S local steps of batch B, three variants do the same work
and are timed interleaved, repeat by repeat (the order rotates each repeat):

- ``one_jit``: ``jax.jit(fedavg(...).round)``: vmap over clients (in chunks),
  scan over local steps, weighted mean, server update; one compiled call.
- ``loop``: the FedJAX way, written fairly: a Python loop over clients of one
  jitted per-client function (``local.local_train`` + accumulating the weighted
  delta on device), then a jitted server update. Same loss_fn and conv/pool
  lowering; data pre-split per client on the device; compiled before timing.
  For large K it times the first ``--loop-max-clients`` clients and scales
  linearly (marked ``extrap``).
- ``central``: S SGD steps at batch K*B on the same samples (one jitted step,
  Python loop over the S steps).

All times are warm (compile excluded and reported separately) and end with
``block_until_ready``. Ratios are medians over repeats of per-repeat ratios:
``vs_loop = loop / one_jit`` and ``vs_central = one_jit / min(central, loop)``.
``peak_mem_ratio`` compares the compiled round's temp (working) memory
(``Compiled.memory_analysis()``, deterministic; inputs excluded) at K=1024 vs
K=64 at the same chunk size (for chunks > 64: 16*chunk vs chunk). The quickstart
(``launch/main.py``, 1 round) reports its ``time_to_first_round_s``. The last
printed line is one JSON object (headline keys for the first model).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO not in sys.path:
  sys.path.insert(0, _REPO)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fedjax_med import algorithms, batching, models, partition, tasks, types  # noqa: E402
from fedjax_med.algorithms import base as alg_base  # noqa: E402
from fedjax_med.algorithms import local  # noqa: E402
from fedjax_med.data import synthetic  # noqa: E402

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 2
CLIENT_LR, SERVER_LR = 0.05, 1.0
_POOL_CAP = 1 << 16  # distinct synthetic images; larger rounds tile them
_FLOWER_NOTE = "Flower ~10-13 s measured start-up (STYLE.md §11)"


# ----------------------------------------------------------------------------- helpers


def _parse_ints(text: str) -> list[int]:
  return [int(x) for x in text.split(",") if x.strip()]


def _chunk_arg(text: str) -> int | None:
  """``"all"`` -> None (vmap every client at once), else a positive int."""
  return None if text in ("all", "none", "0") else int(text)


def _chunk_name(chunk: int | None) -> str:
  return "all" if chunk is None else str(chunk)


def _effective_chunk(chunk: int | None, k: int) -> int:
  return k if chunk is None else min(chunk, k)


def _timed(fn, outputs=None, name=None):
  """Seconds for ``fn()`` until its outputs are ready; keeps them in ``outputs[name]``."""
  t = time.perf_counter()
  out = jax.block_until_ready(fn())
  dt = time.perf_counter() - t
  if outputs is not None:
    outputs[name] = out
  return dt


def _median(xs):
  xs = [x for x in xs if x is not None]
  return statistics.median(xs) if xs else None


def _fmt(x, spec=".3f", none="-"):
  return none if x is None else format(x, spec)


def _goal(value, goal: str) -> str:
  """``goal`` is like ``">=1.0"``; returns ``"(goal >=1.0: ok)"``."""
  if value is None:
    return f"(goal {goal}: n/a)"
  op, bound = goal[:2], float(goal[2:])
  ok = value >= bound if op == ">=" else value <= bound
  return f"(goal {goal}: {'ok' if ok else 'MISSED'})"


def _log(*args):
  print(*args, flush=True)


# ----------------------------------------------------------------------------- inputs


@functools.lru_cache(maxsize=2)
def _pool(n: int, seed: int):
  ds = synthetic.make_dataset("pneumoniamnist", 28, n_train=n, n_val=0, n_test=0, seed=seed)
  return ds.train.images, ds.train.labels  # [n, 28, 28, 1] uint8, [n] int32


def make_round_batch(k: int, steps: int, batch: int, seed: int = 0) -> types.ClientBatch:
  """A host ClientBatch of K full clients (S*B examples each, iid), via the library."""
  n = k * steps * batch
  images, labels = _pool(min(n, _POOL_CAP), seed)
  if n > len(labels):  # tile the pool: timing does not need distinct images
    reps = -(-n // len(labels))
    images, labels = np.tile(images, (reps, 1, 1, 1))[:n], np.tile(labels, reps)[:n]
  part = partition.iid(n, k, seed)
  return batching.make_client_batch(
    images,
    labels,
    part,
    np.arange(k),
    local_steps=steps,
    batch_size=batch,
    seed=seed,
    round_idx=0,
  )


class Setup:
  """Model, loss, initial params and optimizers shared by every variant."""

  def __init__(self, model_name: str, conv_impl: str, unroll: int):
    self.name = model_name
    self.model = models.get_model(model_name, NUM_CLASSES, conv_impl=conv_impl)
    self.loss_fn = tasks.make_loss_fn(self.model)
    self.params = tasks.init_variables(self.model, jax.random.key(0), IMAGE_SHAPE)
    self.client_tx = optax.sgd(CLIENT_LR)
    self.server_tx = optax.sgd(SERVER_LR)
    self.unroll = unroll
    self._loop_fns = None
    self._loop_warm = False

  def algorithm(self, chunk: int | None):
    return algorithms.fedavg(
      self.loss_fn,
      self.client_tx,
      self.server_tx,
      client_chunk_size=chunk,
      local_unroll=self.unroll,
    )

  def state(self):
    return self.algorithm(None).init(self.params, jax.random.key(1))

  # --- one_jit -----------------------------------------------------------------
  def compile_round(self, chunk, state, batch):
    """(compiled round, lower+compile seconds)."""
    t = time.perf_counter()
    compiled = jax.jit(self.algorithm(chunk).round).lower(state, batch).compile()
    return compiled, time.perf_counter() - t

  # --- loop --------------------------------------------------------------------
  def loop_fns(self):
    """(client_update, server_update, zeros), jitted once per model (shapes do not depend on K)."""
    if self._loop_fns is None:
      loss_fn, client_tx, server_tx, unroll = (
        self.loss_fn,
        self.client_tx,
        self.server_tx,
        self.unroll,
      )

      @functools.partial(jax.jit, donate_argnums=0)
      def client_update(acc, server_params, data_c, key_c, weight_c):
        res = local.local_train(loss_fn, client_tx, server_params, data_c, key_c, unroll=unroll)
        acc = jax.tree.map(lambda a, s, c: a + weight_c * (s - c), acc, server_params, res.params)
        return acc, res.loss

      @jax.jit
      def server_update(state, delta_sum, weight_sum):
        pseudo_grad = jax.tree.map(lambda d: d / jnp.maximum(weight_sum, 1e-12), delta_sum)
        updates, opt_state = server_tx.update(pseudo_grad, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return types.ServerState(params, opt_state, state.round + 1, state.rng)

      zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p))
      self._loop_fns = (client_update, server_update, zeros)
    return self._loop_fns

  def make_loop(self, state, host_batch: types.ClientBatch, max_clients: int):
    """A zero-argument loop round over the first ``min(K, max_clients)`` clients."""
    client_update, server_update, zeros = self.loop_fns()
    k = host_batch.weight.shape[0]
    n = min(k, max_clients)
    keys = alg_base.round_keys(state, k)
    per_client = [
      jax.device_put(
        (
          {"image": host_batch.image[c], "label": host_batch.label[c], "mask": host_batch.mask[c]},
          keys[c],
          host_batch.weight[c],
        )
      )
      for c in range(n)
    ]
    weight_sum = jnp.asarray(host_batch.weight[:n].sum())
    if not self._loop_warm:  # compile the per-client and server steps (once per model)
      acc, _ = client_update(zeros(state.params), state.params, *per_client[0])
      jax.block_until_ready(server_update(state, acc, weight_sum))
      self._loop_warm = True

    def run():
      acc = zeros(state.params)
      for data_c, key_c, w_c in per_client:
        acc, _ = client_update(acc, state.params, data_c, key_c, w_c)
      return server_update(state, acc, weight_sum)

    return run, n

  # --- central -----------------------------------------------------------------
  def make_central(self, host_batch: types.ClientBatch):
    """A zero-argument run of S SGD steps at batch K*B (step s = every client's step s)."""
    loss_fn, tx = self.loss_fn, self.client_tx

    @jax.jit
    def step(params, opt_state, batch, key):
      (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    k, s, b = host_batch.mask.shape

    def flat(x, i):  # [K, S, B, ...] -> step i: [K*B, ...]
      return x[:, i].reshape((k * b,) + x.shape[3:])

    batches = [
      jax.device_put(
        {
          "image": flat(host_batch.image, i),
          "label": flat(host_batch.label, i),
          "mask": flat(host_batch.mask, i),
        }
      )
      for i in range(s)
    ]
    keys = jax.random.split(jax.random.key(2), s)
    params = self.params
    opt_state = tx.init(params)
    t = time.perf_counter()
    step = step.lower(params, opt_state, batches[0], keys[0]).compile()
    compile_s = time.perf_counter() - t

    def run():
      p, o = params, opt_state
      for i in range(s):
        p, o, _ = step(p, o, batches[i], keys[i])
      return p

    return run, compile_s


# ----------------------------------------------------------------------------- measurements


def tune_chunk(setup: Setup, k: int, steps: int, batch: int, candidates, repeats: int):
  """Times the one-jit round at K=k per chunk candidate, interleaved, best of ``repeats``.

  A candidate >= k runs all clients at once here but keeps its value, so a
  larger K later still runs in chunks of that size.

  Returns:
    ``(rows, best_row, compiled round of the best)``.
  """
  host = make_round_batch(k, steps, batch)
  dev = jax.device_put(host)
  state = setup.state()
  fns, rows, seen = {}, [], set()
  for chunk in candidates:
    eff = None if chunk is None or chunk >= k else chunk
    if eff in seen:
      continue
    seen.add(eff)
    try:
      compiled, compile_s = setup.compile_round(eff, state, dev)
    except Exception as e:  # e.g. out of memory on an accelerator
      _log(f"  chunk {_chunk_name(chunk)}: failed to compile: {_short(e)}")
      continue
    fns[chunk] = compiled
    rows.append({"chunk": chunk, "compile_s": compile_s, "times": []})
  for r in range(repeats):
    for row in rows[r % len(rows) :] + rows[: r % len(rows)]:
      try:
        row["times"].append(_timed(lambda f=fns[row["chunk"]]: f(state, dev)))
      except Exception as e:
        row["error"] = _short(e)
  rows = [row for row in rows if row["times"] and "error" not in row]
  for row in rows:
    row["round_s"] = min(row["times"])
  best = min(rows, key=lambda row: row["round_s"])
  return rows, best, fns[best["chunk"]]


def _short(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}"


def measure(
  setup: Setup,
  k: int,
  steps: int,
  batch: int,
  chunk,
  repeats: int,
  loop_max_clients: int,
  compiled_round=None,
  round_compile_s=None,
):
  """Interleaved one_jit / loop / central timings for one (model, K)."""
  host = make_round_batch(k, steps, batch)
  dev = jax.device_put(host)
  state = setup.state()
  eff = "all" if chunk is None or chunk >= k else str(chunk)
  res = {"k": k, "chunk": eff, "samples": k * steps * batch}

  if compiled_round is None:
    compiled_round, round_compile_s = setup.compile_round(chunk, state, dev)
  res["compile_s"] = round_compile_s
  variants = {"one_jit": lambda: compiled_round(state, dev)}
  # No warm-up runs (everything is compiled ahead; the median over repeats
  # absorbs first-touch costs): the largest K would spend minutes on them.
  loop_run, n_loop = setup.make_loop(state, host, loop_max_clients)
  res["loop_clients_timed"] = n_loop
  res["loop_extrapolated"] = n_loop < k
  variants["loop"] = loop_run
  try:
    central_run, res["central_compile_s"] = setup.make_central(host)
    variants["central"] = central_run
  except Exception as e:  # e.g. out of memory at batch K*B on an accelerator
    res["central_error"] = _short(e)

  times = {name: [] for name in variants}
  last = {}
  names = list(variants)
  for r in range(repeats):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      if name == "central" and "central_error" in res:
        continue
      try:
        times[name].append(_timed(variants[name], last, name))
      except Exception as e:  # e.g. central out of memory at run time
        if name != "central":
          raise
        res["central_error"] = _short(e)
  if "central_error" in res:
    times.pop("central", None)
  if n_loop == k:  # the loop computes the same round: check it
    diff = jax.tree.map(
      lambda a, b: float(jnp.max(jnp.abs(a - b))), last["loop"].params, last["one_jit"][0].params
    )
    res["loop_vs_one_jit_max_abs_diff"] = max(jax.tree.leaves(diff))
  scale = k / n_loop
  times["loop"] = [t * scale for t in times["loop"]]

  one = times["one_jit"]
  loop_t = times["loop"]
  central = times.get("central", [None] * repeats)
  res["one_jit_s"] = _median(one)
  res["loop_s"] = _median(loop_t)
  res["central_s"] = _median(central)
  res["vs_loop"] = _median([lp / o for lp, o in zip(loop_t, one, strict=True)])
  res["vs_central"] = _median(
    [
      o / min(x for x in (c, lp) if x is not None)
      for o, c, lp in zip(one, central, loop_t, strict=True)
    ]
  )
  res["one_jit_samples_per_s"] = res["samples"] / res["one_jit_s"]
  res["loop_samples_per_s"] = res["samples"] / res["loop_s"]
  if res["central_s"] is not None:
    res["central_samples_per_s"] = res["samples"] / res["central_s"]
    res["throughput_vs_central"] = _median([c / o for c, o in zip(central, one, strict=True)])
  res["times"] = {name: [round(t, 4) for t in ts] for name, ts in times.items()}
  return res


def _batch_shapes(k: int, steps: int, batch: int) -> types.ClientBatch:
  sds = jax.ShapeDtypeStruct
  return types.ClientBatch(
    image=sds((k, steps, batch, *IMAGE_SHAPE), jnp.uint8),
    label=sds((k, steps, batch), jnp.int32),
    mask=sds((k, steps, batch), jnp.bool_),
    weight=sds((k,), jnp.float32),
    client_id=sds((k,), jnp.int32),
  )


def memory(setup: Setup, ks, steps: int, batch: int, chunk):
  """Compiled memory of the round (no data needed: lowered on shapes)."""
  state = setup.state()
  out = {
    "method": "Compiled.memory_analysis() temp_size_in_bytes",
    "chunk": _chunk_name(chunk),
    "ks": list(ks),
  }
  for k in ks:
    compiled, _ = setup.compile_round(chunk, state, _batch_shapes(k, steps, batch))
    ma = compiled.memory_analysis()
    if ma is None:
      return {"method": "unavailable"}
    out[str(k)] = {
      "temp_mib": ma.temp_size_in_bytes / 2**20,
      "argument_mib": ma.argument_size_in_bytes / 2**20,
      "output_mib": ma.output_size_in_bytes / 2**20,
    }
  lo, hi = out[str(ks[0])], out[str(ks[-1])]
  out["temp_ratio"] = hi["temp_mib"] / max(lo["temp_mib"], 1e-9)
  out["argument_ratio"] = hi["argument_mib"] / max(lo["argument_mib"], 1e-9)
  return out


def quickstart_first_round(timeout_s: int = 300) -> dict:
  """Runs the quickstart for one round in a subprocess; reads summary.json."""
  missing = [m for m in ("ml_collections", "clu", "absl") if importlib.util.find_spec(m) is None]
  if missing:
    return {"skipped": f"missing {', '.join(missing)}"}
  env = dict(os.environ)
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  with tempfile.TemporaryDirectory() as tmp:
    extra, source = [], "official"
    real = os.path.join(os.path.dirname(_REPO), "shared", "data", "medmnist")
    if os.path.exists(os.path.join(real, "pneumoniamnist.npz")):
      env["MEDMNIST_ROOT"] = real
    else:
      root = os.path.join(tmp, "data")
      synthetic.write_npz(
        os.path.join(root, "pneumoniamnist.npz"),
        name="pneumoniamnist",
        n_train=4708,
        n_val=524,
        n_test=624,
      )
      extra, source = (
        [
          f"--config.data.root={root}",
          "--config.data.verify_md5=False",
          "--config.data.download=False",
        ],
        "synthetic",
      )
    workdir = os.path.join(tmp, "run")
    cmd = [
      sys.executable,
      os.path.join(_REPO, "launch", "main.py"),
      f"--config={os.path.join(_REPO, 'configs', 'quickstart.py')}",
      f"--workdir={workdir}",
      "--config.fl.rounds=1",
      "--config.log.progress=none",
      *extra,
    ]
    t = time.perf_counter()
    proc = subprocess.run(
      cmd, env=env, capture_output=True, text=True, timeout=timeout_s, cwd=_REPO
    )
    wall = time.perf_counter() - t
    if proc.returncode != 0:
      return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
  return {
    "time_to_first_round_s": summary["time_to_first_round_s"],
    "process_wall_s": wall,
    "data": source,
  }


def large_cohort(
  setup: Setup,
  chunk,
  repeats: int,
  n_examples=50_000,
  num_clients=10_000,
  per_round=1_000,
  steps=5,
  batch=8,
) -> dict:
  """Host batch building vs the round at 1,000 of 10,000 clients (~5 examples each)."""
  images, labels = _pool(n_examples, 7)
  t = time.perf_counter()
  part = partition.iid(n_examples, num_clients, 0)
  partition_s = time.perf_counter() - t

  def build(r):
    ids = batching.sample_clients(num_clients, per_round, 0, r)
    return batching.make_client_batch(
      images, labels, part, ids, local_steps=steps, batch_size=batch, seed=0, round_idx=r
    )

  host = build(0)
  dev = jax.device_put(host)
  state = setup.state()
  compiled, compile_s = setup.compile_round(chunk, state, dev)
  jax.block_until_ready(compiled(state, dev))
  build_t, put_t, round_t = [], [], []
  for r in range(1, repeats + 1):
    t = time.perf_counter()
    host = build(r)
    build_t.append(time.perf_counter() - t)
    put_t.append(_timed(lambda h=host: jax.device_put(h)))
    dev = jax.device_put(host)
    round_t.append(_timed(lambda d=dev: compiled(state, d)))
  out = {
    "examples": n_examples,
    "num_clients": num_clients,
    "clients_per_round": per_round,
    "steps": steps,
    "batch": batch,
    "model": setup.name,
    "chunk": _chunk_name(chunk),
    "partition_s": partition_s,
    "compile_s": compile_s,
    "batch_build_s": _median(build_t),
    "device_put_s": _median(put_t),
    "round_s": _median(round_t),
  }
  out["build_over_round"] = out["batch_build_s"] / out["round_s"]
  return out


# ----------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument(
    "--quick", action="store_true", help="~1 min smoke run: cnn, K=8, chunk candidates 1,4,all"
  )
  p.add_argument("--models", default=None, help="comma list (default cnn,resnet8_gn)")
  p.add_argument("--ks", default=None, help="clients per round, comma list (default 16,64,256)")
  p.add_argument(
    "--resnet-max-k",
    type=int,
    default=None,
    help="largest K for resnet* models (default 16 on CPU to fit ~8 min; "
    "0 = no limit, the default on accelerators)",
  )
  p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default 3)")
  p.add_argument(
    "--chunk", default="auto", help="client_chunk_size: auto (tuned per model), all, or an int"
  )
  p.add_argument(
    "--chunk-candidates",
    default=None,
    help="for auto (default 1,4,8,all on CPU; 128,256,512,1024 otherwise)",
  )
  p.add_argument(
    "--tune-k",
    type=int,
    default=None,
    help="K at which auto tunes the chunk (default 16 on CPU, 1024 otherwise)",
  )
  p.add_argument("--local-steps", type=int, default=5)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--conv-impl", default="auto", choices=models.layers.IMPLS)
  p.add_argument("--unroll", type=int, default=1, help="lax.scan unroll of the local steps")
  p.add_argument(
    "--loop-max-clients",
    type=int,
    default=None,
    help="time at most this many loop clients and extrapolate linearly "
    "(default 64 on CPU, 256 otherwise)",
  )
  p.add_argument(
    "--mem-ks",
    default=None,
    help="K pair for peak_mem_ratio (default 64,1024; on chunks > 64: chunk,16*chunk)",
  )
  p.add_argument(
    "--budget-s",
    type=float,
    default=0,
    help="skip the remaining (model, K) measurements once this many seconds have passed (0 = none)",
  )
  p.add_argument("--skip-quickstart", action="store_true")
  p.add_argument("--skip-memory", action="store_true")
  p.add_argument(
    "--large",
    action="store_true",
    help="also time 1,000 of 10,000 clients: host batching vs the round",
  )
  return p


def _resolve(args):
  cpu = jax.default_backend() == "cpu"
  if args.quick:
    args.models = args.models or "cnn"
    args.ks = args.ks or "8"
    args.chunk_candidates = args.chunk_candidates or "1,4,all"
    args.tune_k = args.tune_k or 8
  args.models = (args.models or "cnn,resnet8_gn").split(",")
  args.ks = _parse_ints(args.ks or "16,64,256")
  args.tune_k = args.tune_k or (16 if cpu else 1024)
  if args.resnet_max_k is None:
    args.resnet_max_k = 16 if cpu else 0
  if args.loop_max_clients is None:
    args.loop_max_clients = 64 if cpu else 256
  default_cands = "1,4,8,all" if cpu else "128,256,512,1024"
  args.chunk_candidates = [
    _chunk_arg(c) for c in (args.chunk_candidates or default_cands).split(",")
  ]
  args.mem_ks = _parse_ints(args.mem_ks) if args.mem_ks else None
  return args


def _ks_for(args, model: str) -> list[int]:
  if model.startswith("resnet") and args.resnet_max_k:
    return [k for k in args.ks if k <= args.resnet_max_k]
  return list(args.ks)


def _mem_ks(args, chunk) -> list[int]:
  if args.mem_ks:
    return args.mem_ks
  lo = 64 if chunk is None or chunk <= 64 else chunk
  return [lo, 16 * lo]


def print_table(results, args):
  _log(
    f"\nRound time, warm, median of {args.repeats} interleaved repeats "
    f"(S={args.local_steps}, B={args.batch_size}, 28x28x1 uint8, 2 classes)"
  )
  hdr = (
    "model",
    "K",
    "chunk",
    "one_jit s",
    "loop s",
    "central s",
    "vs_loop",
    "vs_central",
    "thr/central",
    "one_jit smp/s",
    "central smp/s",
    "compile s",
  )
  widths = (10, 5, 5, 9, 9, 9, 7, 10, 11, 13, 13, 9)

  def line(cells):
    return "  ".join(
      f"{str(c):<{w}}" if i == 0 else f"{str(c):>{w}}"
      for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )

  _log(line(hdr))
  for model, by_k in results.items():
    for k, r in by_k.items():
      if "error" in r:
        _log(f"{model:<10}  {k:>5}  failed: {r['error']}")
        continue
      loop = _fmt(r.get("loop_s")) + ("*" if r.get("loop_extrapolated") else "")
      _log(
        line(
          (
            model,
            k,
            r["chunk"],
            _fmt(r["one_jit_s"]),
            loop,
            _fmt(r.get("central_s")),
            _fmt(r["vs_loop"], ".2f"),
            _fmt(r["vs_central"], ".2f"),
            _fmt(r.get("throughput_vs_central"), ".2f"),
            _fmt(r["one_jit_samples_per_s"], ".0f"),
            _fmt(r.get("central_samples_per_s"), ".0f"),
            _fmt(r["compile_s"], ".1f"),
          )
        )
      )
      if "central_error" in r:
        _log(f"    central failed: {r['central_error']}")
  _log(f"  * loop timed on the first {args.loop_max_clients} clients, extrapolated linearly to K")
  _log(
    "  vs_loop = loop/one_jit; vs_central = one_jit/min(central, loop); "
    "thr/central = one_jit samples/s / central samples/s (medians of per-repeat ratios)"
  )


def main(argv=None) -> dict:
  args = _resolve(build_parser().parse_args(argv))
  backend = jax.default_backend()
  cpu = backend == "cpu"
  t_total = time.perf_counter()
  _log(
    f"jax {jax.__version__}, backend {backend}, {jax.device_count()} device(s) "
    f"({jax.devices()[0].device_kind}), conv/pool lowering {args.conv_impl} -> "
    f"{models.layers.resolve_impl(args.conv_impl)}"
  )
  _log(
    f"models {args.models}, K {args.ks}"
    + (
      f" (resnet* only K <= {args.resnet_max_k}, to fit the time budget)"
      if args.resnet_max_k and max(args.ks) > args.resnet_max_k
      else ""
    )
    + f", S={args.local_steps}, B={args.batch_size}, repeats {args.repeats}"
  )
  out = {
    "backend": backend,
    "device_count": jax.device_count(),
    "device_kind": jax.devices()[0].device_kind,
    "jax_version": jax.__version__,
    "local_steps": args.local_steps,
    "batch_size": args.batch_size,
    "repeats": args.repeats,
    "conv_impl": models.layers.resolve_impl(args.conv_impl),
  }
  results, chunks, tuning, mem = {}, {}, {}, {}
  for model in args.models:
    setup = Setup(model, args.conv_impl, args.unroll)
    pre = {}
    if args.chunk == "auto":
      rows, best, compiled = tune_chunk(
        setup, args.tune_k, args.local_steps, args.batch_size, args.chunk_candidates, repeats=2
      )
      chunks[model] = best["chunk"]
      tuning[model] = [
        {"chunk": _chunk_name(r["chunk"]), "round_s": r["round_s"], "compile_s": r["compile_s"]}
        for r in rows
      ]
      _log(f"\n[{model}] chunk tuning at K={args.tune_k} (warm round s, best of 2, interleaved):")
      for r in rows:
        _log(
          f"  chunk {_chunk_name(r['chunk']):>5}: {r['round_s']:7.3f} s "
          f"({1000 * r['round_s'] / args.tune_k:6.1f} ms/client, compile {r['compile_s']:.1f} s)"
          + ("  <- best" if r is best else "")
        )
      pre[args.tune_k] = (compiled, best["compile_s"])
    else:
      chunks[model] = _chunk_arg(args.chunk)
    chunk = chunks[model]
    results[model] = {}
    for k in _ks_for(args, model):
      compiled, compile_s = pre.get(k, (None, None))
      if args.budget_s and time.perf_counter() - t_total > args.budget_s:
        results[model][str(k)] = {"k": k, "error": f"skipped: --budget-s {args.budget_s:.0f} spent"}
        _log(f"[{model}] K={k}: skipped (time budget)")
        continue
      t = time.perf_counter()
      try:
        r = measure(
          setup,
          k,
          args.local_steps,
          args.batch_size,
          chunk,
          args.repeats,
          args.loop_max_clients,
          compiled,
          compile_s,
        )
      except Exception as e:  # keep going: e.g. out of memory at the largest K
        r = {"k": k, "error": _short(e)}
        _log(f"[{model}] K={k}: failed: {r['error']}")
      else:
        _log(
          f"[{model}] K={k}: one_jit {r['one_jit_s']:.3f} s, loop {r['loop_s']:.3f} s"
          f"{' (extrap)' if r['loop_extrapolated'] else ''}, central {_fmt(r['central_s'])} s"
          f"  [{time.perf_counter() - t:.0f} s]"
        )
      results[model][str(k)] = r
    if not args.skip_memory:
      try:
        mem[model] = memory(setup, _mem_ks(args, chunk), args.local_steps, args.batch_size, chunk)
      except Exception as e:
        mem[model] = {"method": "failed", "error": _short(e)}

  print_table(results, args)
  if mem:
    _log(
      "\nRound working memory: Compiled.memory_analysis() (deterministic, compile only), "
      "same chunk:"
    )
    for model, m in mem.items():
      if "temp_ratio" not in m:
        _log(f"  {model}: {m}")
        continue
      lo, hi = m["ks"]
      a, b = m[str(lo)], m[str(hi)]
      _log(
        f"  {model} (chunk {m['chunk']}): temp {a['temp_mib']:.1f} MiB at K={lo} -> "
        f"{b['temp_mib']:.1f} MiB at K={hi}: ratio {m['temp_ratio']:.2f} "
        f"{_goal(m['temp_ratio'], '<=1.2')}; arguments (the inputs, scale with K) "
        f"{a['argument_mib']:.1f} -> {b['argument_mib']:.1f} MiB"
      )

  if args.large:
    model = args.models[0]
    lg = large_cohort(Setup(model, args.conv_impl, args.unroll), chunks[model], args.repeats)
    out["large"] = lg
    _log(
      f"\nLarge cohort ({model}, chunk {lg['chunk']}): {lg['clients_per_round']} of "
      f"{lg['num_clients']} clients per round, {lg['examples']} synthetic 28x28 gray examples "
      f"(~{lg['examples'] // lg['num_clients']} each, iid), S={lg['steps']}, B={lg['batch']}"
    )
    _log(
      f"  host sample_clients+make_client_batch {lg['batch_build_s']:.3f} s, device_put "
      f"{lg['device_put_s']:.3f} s, round {lg['round_s']:.3f} s -> host batching = "
      f"{100 * lg['build_over_round']:.1f}% of the round (and train.py prefetches it in a "
      f"thread during the previous round); partition {lg['partition_s']:.2f} s once, "
      f"compile {lg['compile_s']:.1f} s"
    )

  qs = {"skipped": "--skip-quickstart"} if args.skip_quickstart else quickstart_first_round()
  if "time_to_first_round_s" in qs:
    _log(
      f"\nQuickstart time to first round: {qs['time_to_first_round_s']:.1f} s (from "
      f"train_and_evaluate start, {qs['data']} data; whole 1-round process incl. imports, "
      f"eval, checkpoint: {qs['process_wall_s']:.1f} s) vs {_FLOWER_NOTE}"
    )
  else:
    _log(f"\nQuickstart time to first round: {qs}")

  head = args.models[0]  # headline numbers: the first model (the small CNN by default)
  ref = results[head].get("64", {})
  out.update(
    {
      "model": head,
      "vs_loop_k64": ref.get("vs_loop"),
      "vs_central_k64": ref.get("vs_central"),
      "peak_mem_ratio": mem.get(head, {}).get("temp_ratio"),
      "peak_mem_argument_ratio": mem.get(head, {}).get("argument_ratio"),
      "peak_mem_ks": mem.get(head, {}).get("ks"),
      "time_to_first_round_s": qs.get("time_to_first_round_s"),
      "quickstart": qs,
      "chunk": {m: _chunk_name(c) for m, c in chunks.items()},
      "chunk_tuning": tuning,
      "tune_k": args.tune_k if args.chunk == "auto" else None,
      "loop_max_clients": args.loop_max_clients,
    }
  )
  for model, by_k in results.items():
    for k, r in by_k.items():
      key = f"{model}_k{k}"
      out[f"one_jit_s_{key}"] = r.get("one_jit_s")
      out[f"loop_s_{key}"] = r.get("loop_s")
      out[f"central_s_{key}"] = r.get("central_s")
      out[f"vs_loop_{key}"] = r.get("vs_loop")
      out[f"vs_central_{key}"] = r.get("vs_central")
      out[f"throughput_vs_central_{key}"] = r.get("throughput_vs_central")
      out[f"compile_s_{key}"] = r.get("compile_s")

  _log(f"\nGoals ({backend}, {head}):")
  if cpu:
    _log(
      f"  vs_loop at K=64 {_fmt(out['vs_loop_k64'], '.2f')} {_goal(out['vs_loop_k64'], '>=1.0')}"
    )
  else:
    for k, goal in (("256", ">=10"), ("1024", ">=30")):
      v = results[head].get(k, {}).get("vs_loop")
      _log(f"  vs_loop at K={k} {_fmt(v, '.1f')} {_goal(v, goal)}")
    for k, r in results[head].items():
      v = r.get("throughput_vs_central")
      _log(
        f"  one_jit samples/s / centralized samples/s at K={k}: {_fmt(v, '.2f')} "
        f"{_goal(v, '>=0.7')}"
      )
  _log(
    f"  vs_central at K=64 {_fmt(out['vs_central_k64'], '.2f')} "
    f"{_goal(out['vs_central_k64'], '<=1.1')}"
  )
  _log(
    f"  peak_mem_ratio {_fmt(out['peak_mem_ratio'], '.2f')} {_goal(out['peak_mem_ratio'], '<=1.2')}"
  )
  out["results"] = results
  out["memory"] = mem
  out["total_s"] = time.perf_counter() - t_total
  _log(f"total {out['total_s']:.0f} s")
  print(json.dumps(out, default=float))
  return out


if __name__ == "__main__":
  main()
