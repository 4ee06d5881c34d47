"""Per-client state for stateful algorithms (SCAFFOLD, FedDyn, FedBN).

All clients' state is one stacked pytree with leading axis ``num_clients``,
kept inside the server state (so it is checkpointed and jitted with it). A
round gathers the sampled clients' rows by ``client_id`` at its start and
scatters the new rows back at its end, inside the one jit. Padding clients
(``client_id`` -1 / weight 0) read row 0 and write nothing; clients never
sampled keep their initial state.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med import types


def init(template: types.PyTree, num_clients: int) -> types.PyTree:
  """``num_clients`` copies of ``template`` stacked on a new leading axis."""
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (num_clients,) + x.shape).copy(), template)


def gather(store: types.PyTree, client_id: types.Array) -> types.PyTree:
  """Rows ``client_id`` [C] of the store (padding ids -1 read row 0)."""
  idx = jnp.maximum(client_id, 0)
  return jax.tree.map(lambda s: s[idx], store)


def scatter(store: types.PyTree, client_id: types.Array, rows: types.PyTree, valid: types.Array):
  """Writes ``rows`` [C, ...] at ``client_id`` where ``valid`` [C]; others are dropped."""
  num_clients = jax.tree.leaves(store)[0].shape[0]
  idx = jnp.where(valid & (client_id >= 0), client_id, num_clients)  # out of range = dropped
  return jax.tree.map(lambda s, r: s.at[idx].set(r.astype(s.dtype), mode="drop"), store, rows)


def nbytes(store: types.PyTree) -> int:
  """Memory of the store in bytes (report it: it grows with the number of clients)."""
  return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(store)))
