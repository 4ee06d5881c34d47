"""FedPer, FedRep, Ditto and APFL vs Python-loop references of their papers.

The federation is ``testing.sampled_clients``: N=6 clients, 3 rounds with overlapping
samples, a padding client in every round, a padded step and partial batches. The model
is a two-layer net whose ``head`` is the personal layer of FedPer and FedRep. Every
reference runs plain SGD per client, per step, with ``jax.grad`` of one step's loss, and
the server (sgd(1.0)) moves to the example-weighted mean of the client models.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms
from fedjax_med.algorithms import personal
from tests import testing

H = 4  # hidden units
TOL = {"rtol": 2e-5, "atol": 2e-6}  # float32 reference vs the scanned/vmapped round
HEAD = personal.matcher("^head/")


def net_params():
  k = jax.random.split(jax.random.PRNGKey(3), 3)
  return {"body": {"w": jax.random.normal(k[0], (testing.D, H)) * 0.5},
          "head": {"w": jax.random.normal(k[1], (H, testing.K)) * 0.5,
                   "b": jax.random.normal(k[2], (testing.K,)) * 0.1}}


def net_loss(params, batch, rng):
  del rng
  hidden = jnp.tanh(batch["image"] @ params["body"]["w"])
  logits = hidden @ params["head"]["w"] + params["head"]["b"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
  m = batch["mask"].astype(jnp.float32)
  return jnp.sum(ce * m) / jnp.maximum(jnp.sum(m), 1.0), {}


def sgd(w, grads, keep=None):
  """One plain SGD step; leaves under a top-level key in ``keep`` do not move."""
  return {k: (w[k] if keep and k in keep else jax.tree.map(lambda x, g: x - testing.LR * g,
                                                            w[k], grads[k])) for k in w}


def real_rows(clients):
  """``(row, client id, weight)`` of the real clients of a round."""
  return [(row, int(clients.client_id[row]), float(clients.weight[row]))
          for row in range(testing.C) if clients.weight[row] > 0]


def run(alg, params, rounds=testing.ROUNDS):
  round_fn = jax.jit(alg.round)
  state = alg.init(params, jax.random.PRNGKey(0))
  states = []
  for r in range(rounds):
    state, _ = round_fn(state, testing.sampled_clients(r))
    states.append(state)
  return states


def plan(chunk=None):
  return algorithms.RoundPlan(num_clients=testing.N, chunk_size=chunk)


# FedPer and FedRep


class HeadReference:
  """Server model plus each client's own head; ``head_fraction`` None = FedPer (train all).

  FedRep: of a client's n real steps, the first floor(head_fraction * n + 1/2) move the
  head only, the rest the body only (padded steps do not count).
  """

  def __init__(self, head_fraction=None):
    self.server = testing.to_numpy(net_params())
    self.heads = {i: self.server["head"] for i in range(testing.N)}
    self.head_fraction = head_fraction

  def round(self, clients):
    models, weights = [], []
    grad = testing.reference_grad(net_loss)
    for row, cid, weight in real_rows(clients):
      w = {"body": self.server["body"], "head": self.heads[cid]}
      steps = testing.real_steps(clients, row)
      head_steps = (None if self.head_fraction is None
                    else int(np.floor(self.head_fraction * len(steps) + 0.5)))
      for i, s in enumerate(steps):
        grads, _ = grad(w, testing.step_batch(clients, row, s))
        if head_steps is None:
          w = sgd(w, grads)
        else:
          w = sgd(w, grads, keep=("body",) if i < head_steps else ("head",))
      self.heads[cid] = w["head"]
      models.append(w)
      weights.append(weight)
    self.server = testing.weighted_average(models, weights)

  def rows(self):
    return tuple(np.stack([self.heads[i][k] for i in range(testing.N)]) for k in ("b", "w"))


@functools.cache
def fedper_states(chunk=None):
  return run(algorithms.fedper(net_loss, optax.sgd(testing.LR), optax.sgd(1.0), plan=plan(chunk),
                               is_local=HEAD), net_params())


@functools.cache
def fedrep_states(chunk=None, head_fraction=1 / 3):
  return run(algorithms.fedrep(net_loss, optax.sgd(testing.LR), optax.sgd(1.0), plan=plan(chunk),
                               is_local=HEAD, head_fraction=head_fraction), net_params())


@pytest.mark.parametrize("name, fraction", [("fedper", None), ("fedrep", 1 / 3),
                                            ("fedrep", 0.5)])
def test_head_methods_match_reference_loop(name, fraction):
  # FedRep at 1/3: one head step for 3 or 2 real steps; at 0.5: 2 head steps of 3 real
  # ones, 1 of 2 (row 1 has a padded step: the split follows each client's real steps).
  states = fedper_states() if name == "fedper" else fedrep_states(head_fraction=fraction)
  ref = HeadReference(fraction)
  for r, state in enumerate(states):
    ref.round(testing.sampled_clients(r))
    chex.assert_trees_all_close(state.params, ref.server, **TOL)
    chex.assert_trees_all_close(state.client_state.algorithm, ref.rows(), **TOL)
  # client_params is the server body with the client's own head
  alg = algorithms.fedper(net_loss, optax.sgd(testing.LR), optax.sgd(1.0), plan=plan(),
                          is_local=HEAD)
  own = alg.client_params(states[-1], 4)
  chex.assert_trees_all_close(own, {"body": ref.server["body"], "head": ref.heads[4]}, **TOL)
  # not vacuous: client 4's head differs from the averaged one
  assert np.abs(ref.heads[4]["w"] - ref.server["head"]["w"]).max() > 1e-3


def test_fedrep_phases_freeze_what_they_do_not_train():
  # head_fraction 1: only heads move, the body stays the initial one in every round
  body0 = np.asarray(net_params()["body"]["w"])
  state = fedrep_states(head_fraction=1.0)[-1]
  np.testing.assert_array_equal(np.asarray(state.params["body"]["w"]), body0)
  # head_fraction 0: the heads stay the initial head; only the body moves
  state = fedrep_states(head_fraction=0.0)[-1]
  np.testing.assert_array_equal(np.asarray(state.client_state.algorithm[1]),
                                np.broadcast_to(net_params()["head"]["w"], (testing.N, H, testing.K)))
  assert np.abs(np.asarray(state.params["body"]["w"]) - body0).max() > 1e-3


@pytest.mark.parametrize("name", ["fedper", "fedrep"])
def test_head_methods_chunked_equal_unchunked(name):
  states = fedper_states if name == "fedper" else fedrep_states
  chex.assert_trees_all_close(states()[-1], states(2)[-1], **TOL)


@pytest.mark.parametrize("pattern, match", [("^nothing/", "no personal layers"),
                                            ("", "every trainable leaf is personal")])
def test_personal_layers_must_split_the_model(pattern, match):
  alg = algorithms.fedper(net_loss, optax.sgd(testing.LR), optax.sgd(1.0), plan=plan(),
                          is_local=personal.matcher(pattern))
  with pytest.raises(ValueError, match=match):
    alg.init(net_params(), jax.random.PRNGKey(0))


def test_fedrep_rejects_a_fraction_outside_0_1():
  with pytest.raises(ValueError, match="head_fraction"):
    algorithms.fedrep(net_loss, optax.sgd(testing.LR), optax.sgd(1.0), plan=plan(),
                      is_local=HEAD, head_fraction=1.5)


# Ditto


@functools.cache
def ditto_states(lam=0.5, chunk=None):
  return run(algorithms.ditto(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
                              lam=lam, plan=plan(chunk)), testing.make_params())


def test_ditto_matches_reference_loop():
  lam = 0.5
  grad = testing.reference_grad(testing.linear_loss)
  server = testing.to_numpy(testing.make_params())
  own = {i: server for i in range(testing.N)}
  for r, state in enumerate(ditto_states(lam)):
    clients = testing.sampled_clients(r)
    models, weights = [], []
    for row, cid, weight in real_rows(clients):
      w, v = server, own[cid]
      for s in testing.real_steps(clients, row):
        batch = testing.step_batch(clients, row, s)
        w = sgd(w, grad(w, batch)[0])  # the global model's local step (FedAvg)
        g = grad(v, batch)[0]  # the personal step: grad f(v) + lam (v - server at round start)
        v = {k: v[k] - testing.LR * (g[k] + lam * (v[k] - server[k])) for k in v}
      own[cid] = v
      models.append(w)
      weights.append(weight)
    server = testing.weighted_average(models, weights)
    chex.assert_trees_all_close(state.params, server, **TOL)
    chex.assert_trees_all_close(state.client_state.algorithm, testing.stack_rows(own), **TOL)
  # the global model is FedAvg's, and the personal models are not it
  chex.assert_trees_all_close(state.params, testing.fedavg_run()[-1].params, **TOL)
  assert np.abs(own[4]["w"] - server["w"]).max() > 1e-3


def test_ditto_without_the_proximal_term_is_local_training():
  states = ditto_states(lam=0.0)
  local = algorithms.local_baseline(testing.linear_loss, optax.sgd(testing.LR), plan=plan())
  local_state = run(local, testing.make_params())[-1]
  chex.assert_trees_all_close(states[-1].client_state.algorithm,
                              local_state.client_state.algorithm, **TOL)


def test_ditto_chunked_equals_unchunked():
  chex.assert_trees_all_close(ditto_states(0.5)[-1], ditto_states(0.5, 2)[-1], **TOL)


# APFL


def mix(a, v, w):
  return jax.tree.map(lambda x, y: a * x + (1 - a) * y, v, w)


@functools.cache
def apfl_states(alpha=0.3, alpha_lr=0.2, chunk=None):
  return run(algorithms.apfl(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
                             alpha=alpha, alpha_lr=alpha_lr, plan=plan(chunk)),
             testing.make_params())


def test_apfl_matches_reference_loop():
  alpha, alpha_lr = 0.3, 0.2
  grad = testing.reference_grad(testing.linear_loss)
  server = testing.to_numpy(testing.make_params())
  own = {i: {"model": server, "alpha": np.float32(alpha)} for i in range(testing.N)}
  for r, state in enumerate(apfl_states(alpha, alpha_lr)):
    clients = testing.sampled_clients(r)
    models, weights = [], []
    for row, cid, weight in real_rows(clients):
      w, v, a = server, own[cid]["model"], own[cid]["alpha"]
      for s in testing.real_steps(clients, row):
        batch = testing.step_batch(clients, row, s)
        g_w = grad(w, batch)[0]
        g_m = grad(mix(a, v, w), batch)[0]  # the gradient at the mixed model
        g_a = sum(np.sum((v[k] - w[k]) * g_m[k]) for k in v)  # d f(a v + (1-a) w) / d a
        w, v, a = (sgd(w, g_w), {k: v[k] - testing.LR * a * g_m[k] for k in v},
                   np.clip(a - alpha_lr * g_a, 0.0, 1.0))
      own[cid] = {"model": v, "alpha": np.float32(a)}
      models.append(w)
      weights.append(weight)
    server = testing.weighted_average(models, weights)
    chex.assert_trees_all_close(state.params, server, **TOL)
    chex.assert_trees_all_close(state.client_state.algorithm, testing.stack_rows(own), **TOL)
  alg = algorithms.apfl(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), alpha=alpha,
                        alpha_lr=alpha_lr, plan=plan())
  chex.assert_trees_all_close(alg.client_params(state, 4),
                              mix(own[4]["alpha"], own[4]["model"], server), **TOL)
  # not vacuous: the mixing weights were learned, and differ between clients
  alphas = np.asarray(state.client_state.algorithm["alpha"])
  assert np.abs(alphas[[1, 2, 4]] - alpha).min() > 1e-4
  assert float(alg.diagnostics(state)["apfl_alpha_max"]) == pytest.approx(alphas.max())


def test_apfl_with_a_fixed_zero_weight_is_fedavg():
  state = apfl_states(alpha=0.0, alpha_lr=0.0)[-1]
  chex.assert_trees_all_close(state.params, testing.fedavg_run()[-1].params, **TOL)
  # v never moves (its gradient is alpha * grad = 0) and the personalized model is the global
  chex.assert_trees_all_close(state.client_state.algorithm["model"],
                              testing.stack_rows({i: testing.make_params()
                                                  for i in range(testing.N)}), **TOL)


def test_apfl_chunked_equals_unchunked():
  chex.assert_trees_all_close(apfl_states()[-1], apfl_states(chunk=2)[-1], **TOL)


@pytest.mark.parametrize("kwargs, match", [({"alpha": 1.5, "alpha_lr": 0.0}, "alpha"),
                                           ({"alpha": 0.5, "alpha_lr": -1.0}, "alpha_lr")])
def test_apfl_rejects_invalid_values(kwargs, match):
  with pytest.raises(ValueError, match=match):
    algorithms.apfl(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0), plan=plan(),
                    **kwargs)


def test_fedrep_body_phase_starts_with_a_fresh_optimizer_state():
  # Heavy-ball momentum 0.9: the reference runs the head phase and the body phase as two
  # separate local trainings (each with zero momentum), one round, S=3 at 1/3 (1 head step).
  alg = algorithms.fedrep(net_loss, optax.sgd(testing.LR, momentum=0.9), optax.sgd(1.0),
                          plan=plan(), is_local=HEAD, head_fraction=1 / 3)
  state, _ = jax.jit(alg.round)(alg.init(net_params(), jax.random.PRNGKey(0)),
                                testing.sampled_clients(0))
  server = testing.to_numpy(net_params())
  grad = testing.reference_grad(net_loss)
  clients = testing.sampled_clients(0)
  models, weights = [], []
  for row, _, weight in real_rows(clients):
    w = {"body": server["body"], "head": server["head"]}
    steps = testing.real_steps(clients, row)
    for phase, phase_steps in (("head", steps[:1]), ("body", steps[1:])):
      trace = jax.tree.map(np.zeros_like, w[phase])
      for s in phase_steps:
        g = grad(w, testing.step_batch(clients, row, s))[0][phase]
        trace = jax.tree.map(lambda t, gi: 0.9 * t + gi, trace, g)
        w = {**w, phase: jax.tree.map(lambda x, t: x - testing.LR * t, w[phase], trace)}
    models.append(w)
    weights.append(weight)
  chex.assert_trees_all_close(state.params, testing.weighted_average(models, weights), **TOL)
