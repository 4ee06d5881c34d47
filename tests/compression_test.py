"""Compression of client updates: error bounds, unbiasedness, exact bytes, error feedback."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms, compression
from tests.testing import LR, S, linear_loss, make_clients, make_params

X = jax.random.normal(jax.random.PRNGKey(0), (300,))


def roundtrip(comp, x, key):
  return comp.decode(comp.encode(x, key), x.shape[0])


# The extreme bit widths (1, 8) in the everyday loop; 2 and 4 bits (the same code with
# other level counts) are slow.
@pytest.mark.parametrize("bits,block", [
    pytest.param(bits, block, marks=() if bits in (1, 8) else pytest.mark.slow)
    for block in (None, 64) for bits in (1, 2, 4, 8)
])
def test_quantize_error_bound_and_unbiased(bits, block):
  comp = compression.quantize(bits, block)
  levels = 2**bits - 1
  m = float(jnp.max(jnp.abs(X)))  # the per-tensor scale bounds every block's scale
  step = 2 * m / levels
  one = roundtrip(comp, X, jax.random.PRNGKey(1))
  assert float(jnp.max(jnp.abs(one - X))) <= step + 1e-5  # within one level
  trials = 4000
  keys = jax.random.split(jax.random.PRNGKey(2), trials)
  mean = jnp.mean(jax.jit(jax.vmap(lambda k: roundtrip(comp, X, k)))(keys), axis=0)
  # Per element the error is a Bernoulli over one level: sd <= step / 2.
  tol = 5 * (step / 2) / math.sqrt(trials)
  assert float(jnp.max(jnp.abs(mean - X))) <= tol


def test_topk_keeps_exactly_k_largest():
  comp = compression.topk(0.1)
  out = roundtrip(comp, X, None)
  k = math.ceil(0.1 * 300)
  assert int(jnp.sum(out != 0)) == k
  kept = np.argsort(-np.abs(np.asarray(X)))[:k]
  np.testing.assert_array_equal(np.asarray(out)[kept], np.asarray(X)[kept])


def test_randk_unbiased_and_biased_variants():
  comp = compression.randk(0.2, unbiased=True)
  keys = jax.random.split(jax.random.PRNGKey(3), 4000)
  outs = jax.jit(jax.vmap(lambda k: roundtrip(comp, X, k)))(keys)
  assert int(jnp.sum(outs[0] != 0)) == 60
  # Each entry is X * 5 with probability 0.2, else 0: sd = |X| * 2.
  tol = 5 * 2 * jnp.abs(X) / math.sqrt(4000) + 1e-6
  assert bool(jnp.all(jnp.abs(outs.mean(0) - X) <= tol))
  plain = roundtrip(compression.randk(0.2, unbiased=False), X, jax.random.PRNGKey(4))
  nz = np.asarray(plain) != 0
  np.testing.assert_array_equal(np.asarray(plain)[nz], np.asarray(X)[nz])


def test_payload_bits_by_hand():
  params = {"w": jnp.zeros((5, 3)), "b": jnp.zeros((3,))}
  assert compression.upload_bits(None, params) == 18 * 32
  assert compression.upload_bits(compression.quantize(4), params) == (15 * 4 + 32) + (3 * 4 + 32)
  assert compression.upload_bits(compression.quantize(2, 4), params) == (15 * 2 + 4 * 32) + (
      3 * 2 + 32)
  # ceil(0.1 * 15) = 2 and ceil(0.1 * 3) = 1 (value, index) pairs of 32 + 32 bits.
  assert compression.upload_bits(compression.topk(0.1), params) == 3 * 64
  assert compression.upload_bits(compression.randk(0.1), params) == (2 * 32 + 64) + (32 + 64)
  assert compression.model_bits(params) == 18 * 32


def test_error_feedback_carries_the_residual():
  comp = compression.topk(0.05)
  residual = jax.tree.map(jnp.zeros_like, {"a": X})
  sent_total, true_total = jnp.zeros_like(X), jnp.zeros_like(X)
  for r in range(5):
    update = {"a": jax.random.normal(jax.random.PRNGKey(10 + r), X.shape)}
    sent, residual = compression.compress_tree(comp, update, jax.random.PRNGKey(r), residual)
    sent_total += sent["a"]
    true_total += update["a"]
  chex.assert_trees_all_close(sent_total + residual["a"], true_total, atol=1e-5)


def reference_fedavg_topk(params, rounds, fraction, num_clients):
  """Python loop: per client SGD, delta, top-k of (delta + residual), residual kept."""
  residual = {c: jax.tree.map(jnp.zeros_like, params) for c in range(num_clients)}
  for r in range(rounds):
    clients = make_clients(seed=r)
    deltas, weights = [], []
    for c in range(clients.weight.shape[0]):
      if clients.weight[c] == 0:
        continue
      p = params
      for s in range(S):
        batch = {"image": clients.image[c, s], "label": clients.label[c, s],
                 "mask": clients.mask[c, s]}
        if batch["mask"].any():
          g, _ = jax.grad(linear_loss, has_aux=True)(p, batch, None)
          p = jax.tree.map(lambda x, gg: x - LR * gg, p, g)
      cid = int(clients.client_id[c])
      corrected = jax.tree.map(lambda a, b, e: a - b + e, params, p, residual[cid])
      sent = {}
      for name, leaf in corrected.items():
        flat = np.asarray(leaf).reshape(-1)
        k = max(1, math.ceil(fraction * flat.size))
        keep = np.argsort(-np.abs(flat), kind="stable")[:k]
        out = np.zeros_like(flat)
        out[keep] = flat[keep]
        sent[name] = out.reshape(leaf.shape)
      residual[cid] = jax.tree.map(lambda a, b: a - b, corrected, sent)
      deltas.append(sent)
      weights.append(float(clients.weight[c]))
    total = sum(weights)
    mean = jax.tree.map(
        lambda *ds, ws=tuple(weights), t=total: sum(w * d for w, d in zip(ws, ds, strict=True)) / t,
        *deltas)
    params = jax.tree.map(lambda a, d: a - d, params, mean)
  return params, residual


def test_fedavg_topk_error_feedback_matches_reference_loop():
  comp = compression.topk(0.2)
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0), plan=algorithms.RoundPlan(
      num_clients=4, compressor=comp, error_feedback=True))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  round_fn = jax.jit(alg.round)
  for r in range(3):
    state, _ = round_fn(state, make_clients(seed=r))
  ref_params, ref_residual = reference_fedavg_topk(make_params(), 3, 0.2, 4)
  chex.assert_trees_all_close(state.params, ref_params, rtol=1e-5, atol=1e-6)
  for c in range(3):  # client 3 is padding in make_clients: never written
    chex.assert_trees_all_close(jax.tree.map(lambda x, c=c: x[c], state.client_state.residual), ref_residual[c],
                                rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(state.client_state.residual["w"][3]).sum()) == 0.0


def test_identity_compressor_equals_plain_fedavg_exactly():
  plain = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  ident = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0), plan=algorithms.RoundPlan(
      num_clients=4, compressor=compression.identity(), error_feedback=True))
  a = plain.init(make_params(), jax.random.PRNGKey(0))
  b = ident.init(make_params(), jax.random.PRNGKey(0))
  for r in range(2):
    a, _ = jax.jit(plain.round)(a, make_clients(seed=r))
    b, _ = jax.jit(ident.round)(b, make_clients(seed=r))
  chex.assert_trees_all_equal(a.params, b.params)
  assert float(jnp.abs(b.client_state.residual["w"]).max()) == 0.0


@pytest.mark.parametrize("name", ["scaffold", "feddyn"])
def test_stateful_algorithms_accept_compression(name):
  comp = compression.quantize(8)
  plan = algorithms.RoundPlan(num_clients=4, compressor=comp, error_feedback=True)
  if name == "scaffold":
    alg = algorithms.scaffold(linear_loss, optax.sgd(LR), optax.sgd(1.0), client_lr=LR, plan=plan)
  else:
    alg = algorithms.feddyn(linear_loss, optax.sgd(LR), optax.sgd(1.0), alpha=0.1, plan=plan)
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  state, _ = jax.jit(alg.round)(state, make_clients())
  assert state.client_state.residual is not None and bool(jnp.all(jnp.isfinite(state.client_state.residual["w"])))
