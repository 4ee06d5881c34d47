"""Shared data for the stateful-algorithm tests: N clients, a different sample each round.

Every round has C = 4 rows (``make_clients``): row 1 has a padded step (mask all
False), row 2 partial batches, row 3 is a padding client (weight 0, id -1).
The sampled ids overlap across rounds (client 4 every round, in a different
row; client 2 in rounds 0 and 2) so that per-client state is read back, and
client 5 / client 3 are sampled only once.
"""

import functools

import jax
import numpy as np
import optax

from fedjax_med import algorithms, types
from tests.algorithms.fedavg_test import LR, C, S, linear_loss, make_clients, make_params

N = 6
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
