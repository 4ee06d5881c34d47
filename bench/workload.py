"""The round workload the benchmarks share: synthetic data, a model, and three ways to run it.

The same work, S local steps of batch B on each of K clients, three ways:

- ``one_jit`` (:meth:`Setup.compile_round`): ``jax.jit(fedavg(...).round)``:
  vmap over clients (in chunks), scan over local steps, weighted mean, server
  update; one compiled call.
- ``loop`` (:meth:`Setup.make_loop`): the FedJAX way, written fairly: a Python
  loop over clients of one jitted per-client function (``local.local_train``
  plus accumulating the weighted delta on device), then a jitted server update.
  Same loss_fn and conv/pool lowering; data pre-split per client on the device.
- ``central`` (:meth:`Setup.make_central`): S SGD steps at batch K*B on the
  same samples (one jitted step, a Python loop over the S steps).

The default input is a 28x28 gray image (``IMAGE_SHAPE``); pass
``image_shape=(D, H, W, 1)`` (e.g. ``VOLUME_SHAPE``, AdrenalMNIST3D's 28^3)
to :class:`Setup` and :func:`make_round_batch` for the 3D models.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench import harness
from fedjax_med import algorithms, batching, models, partition, tasks, types
from fedjax_med.algorithms import base as alg_base
from fedjax_med.algorithms import local
from fedjax_med.data import synthetic

IMAGE_SHAPE = (28, 28, 1)
VOLUME_SHAPE = (28, 28, 28, 1)  # AdrenalMNIST3D: 2 classes, 1,188 training volumes
NUM_CLASSES = 2
CLIENT_LR, SERVER_LR = 0.05, 1.0
_POOL_CAP = 1 << 16  # distinct synthetic images; larger rounds tile them


@functools.lru_cache(maxsize=2)
def image_pool(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """``n`` synthetic gray 28x28 images (uint8 [n, 28, 28, 1]) and labels (int32 [n])."""
  ds = synthetic.make_dataset("pneumoniamnist", 28, n_train=n, n_val=0, n_test=0, seed=seed)
  return ds.train.images, ds.train.labels


@functools.lru_cache(maxsize=2)
def volume_pool(n: int, seed: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """``n`` synthetic gray volumes (uint8 [n, *shape]) and labels (int32 [n], 2 classes).

  Class c is noise around a brightness of 96 + 64 c: learnable, and enough for timing.
  """
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  noise = rng.normal(0.0, 32.0, (n, *shape)).astype(np.float32)
  centre = 96.0 + 64.0 * labels.reshape((n,) + (1,) * len(shape))
  return np.clip(noise + centre, 0, 255).astype(np.uint8), labels


def make_round_batch(
    k: int, steps: int, batch: int, seed: int = 0, image_shape: tuple[int, ...] = IMAGE_SHAPE
) -> types.ClientBatch:
  """A host ClientBatch of K full clients (S*B examples each, iid), via the library.

  ``image_shape`` other than ``IMAGE_SHAPE`` (e.g. a 3D ``VOLUME_SHAPE``) draws
  :func:`volume_pool` data, at most 1,024 distinct examples (then tiled).
  """
  n = k * steps * batch
  if tuple(image_shape) == IMAGE_SHAPE:
    images, labels = image_pool(min(n, _POOL_CAP), seed)
  else:
    images, labels = volume_pool(min(n, 1024), seed, tuple(image_shape))
  if n > len(labels):  # tile the pool: timing does not need distinct images
    reps = -(-n // len(labels))
    images = np.tile(images, (reps,) + (1,) * (images.ndim - 1))[:n]
    labels = np.tile(labels, reps)[:n]
  part = partition.iid(n, k, seed)
  return batching.make_client_batch(
    images, labels, part, np.arange(k), local_steps=steps, batch_size=batch, seed=seed,
    round_idx=0,
  )


def chunk_name(chunk: int | None) -> str:
  """``None`` (every client at once) prints as ``"all"``."""
  return "all" if chunk is None else str(chunk)


def run_chunk(chunk: int | None, k: int) -> str:
  """The chunk a round of K clients runs with: ``"all"`` when it holds every client."""
  return chunk_name(None if chunk is None or chunk >= k else chunk)


class Setup:
  """Model, loss, initial params and optimizers shared by every variant."""

  def __init__(self, model_name: str, conv_impl: str, unroll: int,
               image_shape: tuple[int, ...] = IMAGE_SHAPE):
    self.name = model_name
    self.image_shape = tuple(image_shape)
    self.model = models.get_model(model_name, NUM_CLASSES, conv_impl=conv_impl)
    self.loss_fn = tasks.make_loss_fn(self.model)
    self.params = tasks.init_variables(self.model, jax.random.key(0), self.image_shape)
    self.client_tx = optax.sgd(CLIENT_LR)
    self.server_tx = optax.sgd(SERVER_LR)
    self.unroll = unroll
    self._loop_fns = None
    self._loop_warm = False

  def algorithm(self, chunk: int | None) -> types.FederatedAlgorithm:
    plan = algorithms.RoundPlan(chunk_size=chunk, unroll=self.unroll)
    return algorithms.fedavg(self.loss_fn, self.client_tx, self.server_tx, plan=plan)

  def state(self) -> types.ServerState:
    return self.algorithm(None).init(self.params, jax.random.key(1))

  def compile_round(self, chunk, state, batch):
    """(compiled one-jit round, lower+compile seconds); ``batch`` may be shapes only."""
    return harness.compile_ahead(self.algorithm(chunk).round, state, batch)

  def _loop_steps(self):
    """(client_update, server_update, zeros), jitted once per model (shapes do not depend on K)."""
    if self._loop_fns is None:
      loss_fn, client_tx, server_tx, unroll = (
        self.loss_fn, self.client_tx, self.server_tx, self.unroll)

      @functools.partial(jax.jit, donate_argnums=0)
      def client_update(acc, server_params, data_c, key_c, weight_c):
        res = local.local_train(loss_fn, client_tx, server_params, data_c, key_c, unroll=unroll)
        acc = jax.tree.map(lambda a, s, c: a + weight_c * (s - c), acc, server_params, res.params)
        return acc, res.loss

      @jax.jit
      def server_update(state, delta_sum, weight_sum):
        pseudo_grad = jax.tree.map(lambda d: d / jnp.maximum(weight_sum, 1e-12), delta_sum)
        params, opt_state = alg_base.server_update(
          server_tx, state.params, state.opt_state, pseudo_grad)
        return state._replace(params=params, opt_state=opt_state, round=state.round + 1)

      zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p))
      self._loop_fns = (client_update, server_update, zeros)
    return self._loop_fns

  def make_loop(self, state, host_batch: types.ClientBatch, max_clients: int):
    """A zero-argument loop round over the first ``min(K, max_clients)`` clients.

    Returns:
      ``(run, clients it runs)``; its steps are compiled here, once per model.
    """
    client_update, server_update, zeros = self._loop_steps()
    k = host_batch.weight.shape[0]
    n = min(k, max_clients)
    keys = alg_base.round_keys(state, k)
    data = local.client_data(host_batch)
    per_client = [
      jax.device_put(({name: x[c] for name, x in data.items()}, keys[c], host_batch.weight[c]))
      for c in range(n)
    ]
    weight_sum = jnp.asarray(host_batch.weight[:n].sum())
    if not self._loop_warm:
      acc, _ = client_update(zeros(state.params), state.params, *per_client[0])
      jax.block_until_ready(server_update(state, acc, weight_sum))
      self._loop_warm = True

    def run():
      acc = zeros(state.params)
      for data_c, key_c, w_c in per_client:
        acc, _ = client_update(acc, state.params, data_c, key_c, w_c)
      return server_update(state, acc, weight_sum)

    return run, n

  def make_central(self, host_batch: types.ClientBatch):
    """A zero-argument run of S SGD steps at batch K*B (step s = every client's step s).

    Returns:
      ``(run, compile seconds)``.
    """
    loss_fn, tx = self.loss_fn, self.client_tx

    def step(params, opt_state, batch, key):
      (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, key)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, loss

    k, s, b = host_batch.mask.shape
    data = local.client_data(host_batch)  # [K, S, B, ...] -> step i: [K*B, ...]
    batches = [
      jax.device_put({n: x[:, i].reshape((k * b,) + x.shape[3:]) for n, x in data.items()})
      for i in range(s)
    ]
    keys = jax.random.split(jax.random.key(2), s)
    params, opt_state = self.params, tx.init(self.params)
    step, compile_s = harness.compile_ahead(step, params, opt_state, batches[0], keys[0])

    def run():
      p, o = params, opt_state
      for i in range(s):
        p, o, _ = step(p, o, batches[i], keys[i])
      return p

    return run, compile_s
