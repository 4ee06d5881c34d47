"""Helpers shared by the tests: tiny problems, client batches, reference loops, real data.

- **Linear model** (``linear_loss``, ``make_params``, ``make_clients``): C=4 clients
  of S=3 steps of B=4 examples in D=5 dimensions, K=3 classes; row 1 has a padded
  step, row 2 partial batches, row 3 is a padding client (weight 0).
- **Sampled rounds** (``sampled_clients``): N=6 clients, a different sample each
  round with overlaps, for the stateful algorithms (per-client state read back).
- **Reference loops**: ``reference_round`` (FedAvg, per client, per step) and
  ``reference_grad``; the stateful algorithms keep their own in their test files.
- **Toy objectives** for the analysis tests (``mlp_*``, ``quadratic``...).
- **Real data**: ``real_root`` / ``require`` find the official MedMNIST files or skip.
- **Forged files**: ``write_npz_declaring`` writes an ``.npz`` whose ``.npy`` header lies.
- **End to end**: ``tiny_run_config`` (cnn_tiny on a synthetic PneumoniaMNIST file, 5
  sites) and ``assert_cli_refuses`` (the training CLI exits 2 with one line, writing nothing).
"""

import contextlib
import functools
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from fedjax_med import algorithms, types

C, S, B, D, K = 4, 3, 4, 5, 3
LR = 0.3


def linear_loss(params, batch, rng):
  del rng
  logits = batch["image"] @ params["w"] + params["b"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  m = batch["mask"].astype(jnp.float32)
  return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0), {}


def stats_loss(params, batch, rng):
  """Like linear_loss, plus a non-trained collection (as BatchNorm's batch_stats)."""
  loss, _ = linear_loss({"w": params["params"]["w"], "b": params["params"]["b"]}, batch, rng)
  m = batch["mask"].astype(jnp.float32)[:, None]
  mean = jnp.sum(batch["image"] * m, 0) / jnp.maximum(jnp.sum(m), 1.0)
  new_stats = {"mean": 0.5 * params["stats"]["mean"] + 0.5 * mean}
  return loss, {"variables": {"stats": new_stats}}


def make_params(with_stats=False):
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  p = {"w": jax.random.normal(k1, (D, K)) * 0.3, "b": jax.random.normal(k2, (K,)) * 0.1}
  if with_stats:
    return {"params": p, "stats": {"mean": jnp.zeros((D,))}}
  return p


def make_clients(num_clients=C, seed=1) -> types.ClientBatch:
  rng = np.random.default_rng(seed)
  image = rng.normal(size=(num_clients, S, B, D)).astype(np.float32)
  label = rng.integers(0, K, size=(num_clients, S, B)).astype(np.int32)
  mask = np.ones((num_clients, S, B), bool)
  mask[1, 2] = False  # a padded step: must change nothing
  mask[2, :, 2:] = False  # partial batches
  weight = rng.integers(5, 20, size=num_clients).astype(np.float32)
  weight[3] = 0.0  # a padding client: must be ignored
  mask[3] = False
  return types.ClientBatch(image, label, mask, weight, np.arange(num_clients, dtype=np.int32))


def bn_params():
  k = jax.random.split(jax.random.PRNGKey(0), 4)
  return {
    "params": {
      "Dense_0": {"w": jax.random.normal(k[0], (D, K)) * 0.3, "b": jax.random.normal(k[1], (K,)) * 0.1},
      "BatchNorm_0": {
        "scale": 1.0 + 0.1 * jax.random.normal(k[2], (D,)),
        "bias": 0.1 * jax.random.normal(k[3], (D,)),
      },
    },
    "batch_stats": {"BatchNorm_0": {"mean": jnp.zeros((D,))}},
  }


def bn_loss(params, batch, rng):
  """Train-mode BatchNorm (centre by the batch mean, then scale/bias), a dense layer, and the
  running-mean update returned in ``aux["variables"]``."""
  del rng
  p = params["params"]
  m = batch["mask"].astype(jnp.float32)
  mean = jnp.sum(batch["image"] * m[:, None], 0) / jnp.maximum(jnp.sum(m), 1.0)
  x = (batch["image"] - mean) * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"]
  logits = x @ p["Dense_0"]["w"] + p["Dense_0"]["b"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  loss = jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0)
  running = 0.9 * params["batch_stats"]["BatchNorm_0"]["mean"] + 0.1 * mean
  return loss, {"variables": {"batch_stats": {"BatchNorm_0": {"mean": running}}}}


def reference_round(loss_fn, params, clients, server_update):
  """Slow, obvious FedAvg: per client, per step, explicit grad and SGD."""
  deltas, weights = [], []
  for c in range(clients.weight.shape[0]):
    p = params
    for s in range(S):
      batch = {"image": clients.image[c, s], "label": clients.label[c, s], "mask": clients.mask[c, s]}
      if not batch["mask"].any():
        continue
      grads, aux = jax.grad(loss_fn, has_aux=True)(p, batch, None)
      p = jax.tree.map(lambda x, g: x - LR * g, p, grads)
      if "variables" in aux:
        p = {**p, **aux["variables"]}
    deltas.append(jax.tree.map(lambda a, b: a - b, params, p))
    weights.append(float(clients.weight[c]))
  total = sum(weights)
  pseudo = jax.tree.map(lambda *ds: sum(w * d for w, d in zip(weights, ds, strict=True)) / total, *deltas)
  return server_update(params, pseudo)


# Sampled rounds

N = 6  # clients in the sampled-rounds federation
ROUND_IDS = ((0, 4, 2, -1), (4, 1, 5, -1), (2, 3, 4, -1))
ROUNDS = len(ROUND_IDS)


def sampled_clients(r: int) -> types.ClientBatch:
  """Round ``r``'s batch: ``make_clients(seed=r)`` with ids ``ROUND_IDS[r]``."""
  clients = make_clients(num_clients=C, seed=r)
  assert clients.weight[3] == 0 and not clients.mask[3].any()
  return clients._replace(client_id=np.asarray(ROUND_IDS[r], np.int32))


def step_batch(clients: types.ClientBatch, c: int, s: int) -> dict:
  """The batch of local step ``s`` of row ``c``, as ``loss_fn`` sees it."""
  return {"image": clients.image[c, s], "label": clients.label[c, s], "mask": clients.mask[c, s]}


def real_steps(clients: types.ClientBatch, c: int) -> list[int]:
  """The local steps of row ``c`` that have at least one real example."""
  return [s for s in range(S) if clients.mask[c, s].any()]


def weighted_average(trees: list, weights: list[float]):
  """``sum_i w_i t_i / sum_i w_i``, written out leaf by leaf."""
  total = sum(weights)
  return jax.tree.map(lambda *xs: sum(w * x for w, x in zip(weights, xs, strict=True)) / total, *trees)


def stack_rows(per_client: dict, num_clients: int = N):
  """``{client_id: tree}`` -> one tree with leaves stacked [N, ...] in id order."""
  return jax.tree.map(lambda *xs: np.stack(xs), *[per_client[i] for i in range(num_clients)])


@functools.cache
def fedavg_run(rounds: int = ROUNDS):
  """Plain FedAvg (client sgd(LR), server sgd(1.0)) over the sampled rounds: the state after
  each round (cached: several tests compare against it)."""
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  round_fn = jax.jit(alg.round)
  state, states = alg.init(make_params(), jax.random.PRNGKey(0)), []
  for r in range(rounds):
    state, _ = round_fn(state, sampled_clients(r))
    states.append(state)
  return states


def to_numpy(tree):
  """A pytree of numpy arrays: the references do their arithmetic in plain float32 numpy."""
  return jax.tree.map(np.asarray, tree)


@functools.cache
def reference_grad(loss_fn):
  """``(w, batch) -> (grads, aux)`` as numpy: ``jax.grad`` of one step's loss (rng unused).

  Jitted only so that the loops do not pay an eager compile for every primitive.
  """
  grad_fn = jax.jit(jax.grad(lambda w, batch: loss_fn(w, batch, None), has_aux=True))
  return lambda w, batch: to_numpy(grad_fn(w, batch))


# Toy objectives (analysis tests)

def mlp_params(seed: int = 0, sizes=(3, 4, 2)) -> dict:
  """A 3-4-2 tanh MLP: 26 parameters (two kernels, two biases)."""
  rng = np.random.default_rng(seed)
  params = {}
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    params[f"dense{i}"] = {
        "kernel": jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32),
        "bias": jnp.asarray(0.1 * rng.normal(size=(b,)), jnp.float32),
    }
  return params


def mlp_data(seed: int = 1, n: int = 16, dim: int = 3, classes: int = 2):
  rng = np.random.default_rng(seed)
  return (jnp.asarray(rng.normal(size=(n, dim)), jnp.float32),
          jnp.asarray(rng.integers(0, classes, size=(n,)), jnp.int32))


def mlp_apply(params, x):
  h = jnp.tanh(x @ params["dense0"]["kernel"] + params["dense0"]["bias"])
  return h @ params["dense1"]["kernel"] + params["dense1"]["bias"]


def mlp_batch_loss(params, batch):
  x, y = batch
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(mlp_apply(params, x), y))


def mlp_loss_fn(data=None):
  """``loss_fn(params) -> mean CE`` of the MLP on fixed data."""
  data = mlp_data() if data is None else data
  return lambda params: mlp_batch_loss(params, data)


def dense_eigvalsh(loss_fn, params) -> np.ndarray:
  """Ascending eigenvalues of the dense Hessian of the raveled params (float64 on the host)."""
  flat, unravel = ravel_pytree(params)
  hess = jax.jit(jax.hessian(lambda v: loss_fn(unravel(v))))(flat)
  hess = np.asarray(hess, np.float64)
  return np.linalg.eigvalsh((hess + hess.T) / 2)


def quadratic(diag, b=None):
  """``f(w) = 1/2 sum a_i w_i^2 + b . w`` on a ``{"w": [n]}`` pytree, Hessian ``diag(a)``."""
  a = jnp.asarray(diag, jnp.float32)
  b = jnp.zeros_like(a) if b is None else jnp.asarray(b, jnp.float32)
  return lambda p: 0.5 * jnp.sum(a * p["w"] ** 2) + jnp.dot(b, p["w"])


# Real data

def real_root(filename: str) -> Path | None:
  """The folder holding an official file: $MEDMNIST_ROOT or ../shared/data/medmnist."""
  candidates = []
  if os.environ.get("MEDMNIST_ROOT"):
    candidates.append(Path(os.environ["MEDMNIST_ROOT"]).expanduser())
  candidates.append((Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "medmnist").resolve())
  for root in candidates:
    if (root / filename).is_file():
      return root
  return None


def require(filename: str) -> Path:
  """``real_root(filename)`` or skip the test with the reason."""
  root = real_root(filename)
  if root is None:
    pytest.skip(f"official {filename} not found in $MEDMNIST_ROOT or ../shared/data/medmnist")
  return root


# Forged files

def write_npz_declaring(path, arrays: dict, key: str, shape=None, keep_bytes=None) -> None:
  """Writes ``arrays`` as a (deflated) ``.npz``, but member ``key`` gets a header declaring
  ``shape`` (default: its own) and only its first ``keep_bytes`` data bytes (default: all)."""
  with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
    for name, value in arrays.items():
      buf = io.BytesIO()
      if name != key:
        np.lib.format.write_array(buf, value, allow_pickle=False)
      else:
        header = np.lib.format.header_data_from_array_1_0(value)
        header["shape"] = value.shape if shape is None else tuple(shape)
        np.lib.format.write_array_header_1_0(buf, header)
        buf.write(value.tobytes()[:keep_bytes])
      archive.writestr(f"{name}.npy", buf.getvalue())


@contextlib.contextmanager
def unoptimized_compiles():
  """Skips most XLA optimizations (compile time dominates tiny programs) and keeps those
  executables from later tests: neither jit's in-memory cache nor the session's persistent
  compilation cache (tests/conftest.py) tells them from optimized ones, so a later test
  tracing the same program would run the unoptimized executable and round differently
  from a fresh process (the kill -9 tests compare the two bit for bit)."""
  old = {k: jax.config.values[k] for k in ("jax_disable_most_optimizations",
                                           "jax_enable_compilation_cache")}
  jax.config.update("jax_disable_most_optimizations", True)
  jax.config.update("jax_enable_compilation_cache", False)
  try:
    yield
  finally:
    jax.clear_caches()
    for k, v in old.items():
      jax.config.update(k, v)


REPO = Path(__file__).resolve().parents[1]


def tiny_run_config(tmp_path, **overrides):
  """A config that trains cnn_tiny on 5 sites of a small synthetic PneumoniaMNIST file
  (written under ``tmp_path/data``) for one round of 2 steps, evaluating every round."""
  from configs import base as base_config  # ml_collections: not for every test module
  from fedjax_med.data import synthetic

  synthetic.write_npz(tmp_path / "data" / "pneumoniamnist.npz", name="pneumoniamnist",
                      n_train=120, n_val=30, n_test=30)
  return base_config.apply(base_config.get_config(), {
      "data.root": str(tmp_path / "data"), "data.download": False, "data.verify_md5": False,
      "model.name": "cnn_tiny", "partition.min_size": 5, "fl.rounds": 1, "fl.num_clients": 5,
      "fl.clients_per_round": 5, "fl.local_steps": 2, "fl.batch_size": 8, "eval.every": 1,
      "eval.batch_size": 32, "ckpt.every": 1, "log.progress": "none", **overrides})


def assert_cli_refuses(tmp_path, *flags: str) -> str:
  """Runs ``launch/main.py --config=configs/quickstart.py`` with ``flags`` in
  ``tmp_path/run``; asserts exit code 2, one ``error:`` line and nothing written.

  Returns:
    The error line.
  """
  res = subprocess.run(
      [sys.executable, str(REPO / "launch" / "main.py"), "--config=configs/quickstart.py",
       f"--workdir={tmp_path / 'run'}", *flags],
      capture_output=True, text=True, cwd=REPO, timeout=300,
      env={**os.environ, "PYTHONPATH": str(REPO)})
  assert res.returncode == 2, res.stderr
  assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
  assert not (tmp_path / "run").exists()
  return res.stderr
