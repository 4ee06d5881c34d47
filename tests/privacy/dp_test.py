"""DP-SGD (record level) and DP-FedAvg (client level) against slow Python-loop references.

The references draw the noise with the same keys (the key contract is part of
what they check: noise from an unexpected key or of the wrong scale fails), but
clip, sum, divide and update in plain numpy, example by example and client by
client.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedjax_med import algorithms, types
from fedjax_med.privacy import dp_fedavg, dp_sgd, mechanisms
from tests.testing import LR, B, C, S, linear_loss, make_clients, make_params

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _norm(tree) -> float:
  return float(np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(tree))))


def _example_grads(params, batch):
  """Per-example gradients, one jax.grad call per example (the obvious way)."""
  grads = []
  for i in range(batch["mask"].shape[0]):
    one = {k: v[i : i + 1] for k, v in batch.items()}
    grads.append(jax.grad(lambda p, b: linear_loss(p, b, None)[0])(params, one))
  return grads


def _clip_np(tree, clip_norm):
  n = _norm(tree)
  scale = 1.0 if n <= clip_norm else clip_norm / n
  return jax.tree.map(lambda x: np.asarray(x) * scale, tree)


def reference_dp_sgd_round(params, clients, round_keys, dp: dp_sgd.RecordDP):
  """FedAvg whose every local step (empty ones too) is DP-SGD, per client, per example."""
  deltas, weights = [], []
  for c in range(clients.weight.shape[0]):
    if clients.weight[c] == 0:
      continue
    p = params
    step_keys = jax.random.split(round_keys[c], S)
    for s in range(S):
      batch = {"image": clients.image[c, s], "label": clients.label[c, s],
               "mask": clients.mask[c, s]}
      total = jax.tree.map(np.zeros_like, p)
      for i, g in enumerate(_example_grads(p, batch)):
        if batch["mask"][i]:
          total = jax.tree.map(np.add, total, _clip_np(g, dp.clip_norm))
      noise_key, _ = jax.random.split(step_keys[s])
      noise = mechanisms.gaussian_noise(noise_key, p, dp.noise_multiplier * dp.clip_norm)
      grad = jax.tree.map(lambda t, z: (t + np.asarray(z)) / dp.batch_size, total, noise)
      p = jax.tree.map(lambda x, g: np.asarray(x) - LR * g, p, grad)
    deltas.append(jax.tree.map(np.subtract, params, p))
    weights.append(float(clients.weight[c]))
  pseudo = jax.tree.map(lambda *d: sum(w * x for w, x in zip(weights, d, strict=True))
                        / sum(weights), *deltas)
  return jax.tree.map(np.subtract, params, pseudo)


def _round_keys(state, num):
  return jax.random.split(jax.random.fold_in(state.rng, state.round), num)


@pytest.mark.parametrize("noise,clip", [(0.0, 0.05), (0.7, 0.05), (0.0, 1e6)])
def test_dp_sgd_round_matches_reference(noise, clip):
  dp = dp_sgd.RecordDP(clip, noise, B)
  plan = algorithms.RoundPlan(record_dp=dp)
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0), plan=plan)
  state = alg.init(make_params(), jax.random.PRNGKey(3))
  clients = make_clients()
  new, metrics = jax.jit(alg.round)(state, clients)
  expected = reference_dp_sgd_round(state.params, clients, _round_keys(state, C), dp)
  chex.assert_trees_all_close(new.params, expected, atol=2e-5, rtol=1e-5)
  # every step of a real client runs (its empty step too: it adds noise); padding clients none
  np.testing.assert_array_equal(metrics.client_steps, [S, S, S, S])


def test_dp_sgd_without_noise_or_clipping_is_the_plain_round():
  """sigma = 0, clip = inf and full batches of B: DP-SGD's sum / B is the plain mean."""
  clients = make_clients()
  full = clients._replace(mask=np.ones_like(clients.mask) & (clients.weight > 0)[:, None, None])
  plain = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  private = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0), plan=algorithms.RoundPlan(
      record_dp=dp_sgd.RecordDP(float("inf"), 0.0, B)))
  state = plain.init(make_params(), jax.random.PRNGKey(0))
  a, _ = jax.jit(plain.round)(state, full)
  b, _ = jax.jit(private.round)(state, full)
  # equal up to float summation order (per-example sums vs one batched matmul)
  chex.assert_trees_all_close(a.params, b.params, atol=1e-6, rtol=1e-6)


def test_per_example_gradients_are_clipped():
  dp = dp_sgd.RecordDP(0.01, 0.0, 1)
  grad_fn = dp_sgd.grad_fn(linear_loss, dp)
  clients = make_clients()
  params = make_params()
  for i in range(B):  # a batch of one real example: the result is that example's clipped grad
    batch = {"image": clients.image[0, 0], "label": clients.label[0, 0],
             "mask": np.arange(B) == i}
    (_, aux), g = grad_fn(params, batch, jax.random.PRNGKey(0))
    raw = _example_grads(params, batch)[i]
    assert _norm(raw) > 0.01  # the clip binds
    assert _norm(g) <= 0.01 * (1 + 1e-5)
    chex.assert_trees_all_close(g, _clip_np(raw, 0.01), atol=1e-7)
    assert float(aux["clipped_fraction"]) == 1.0


def test_dp_sgd_noise_std():
  """An empty step's gradient is pure noise / B: its entries' std is sigma * C / B.

  With n = 3000 draws the sample std has relative standard error ~1/sqrt(2n) = 1.3 %;
  the test allows 5 of them (6.5 %), and the mean 5 standard errors of the mean.
  """
  sigma, clip, bsz = 1.3, 0.4, 8
  params = {"w": jnp.zeros((100, 30)), "b": jnp.zeros((0,))}
  grad_fn = dp_sgd.grad_fn(lambda p, b, r: (jnp.sum(p["w"]) * 0.0, {}),
                           dp_sgd.RecordDP(clip, sigma, bsz))
  batch = {"image": np.zeros((4, 1)), "label": np.zeros(4, np.int32), "mask": np.zeros(4, bool)}
  (_, _), g = grad_fn(params, batch, jax.random.PRNGKey(1))
  x = np.asarray(g["w"]).ravel()
  expected = sigma * clip / bsz
  assert abs(x.std() / expected - 1) < 5 / np.sqrt(2 * x.size)
  assert abs(x.mean()) < 5 * expected / np.sqrt(x.size)


def test_clip_bounds_norm_and_keeps_small_trees():
  tree = {"a": jnp.full((3,), 4.0), "b": jnp.full((2, 2), -3.0)}
  clipped, norm = mechanisms.clip(tree, 1.5)
  assert np.isclose(float(norm), np.sqrt(3 * 16 + 4 * 9))
  assert np.isclose(_norm(clipped), 1.5, rtol=1e-6)
  same, _ = mechanisms.clip(tree, 100.0)
  chex.assert_trees_all_close(same, tree)
  deltas = {"a": jnp.arange(12.0).reshape(4, 3), "b": jnp.ones((4, 2))}
  out = dp_fedavg.clip_deltas(deltas, 2.0)
  for c in range(4):
    assert _norm(jax.tree.map(lambda x, c=c: x[c], out)) <= 2.0 * (1 + 1e-6)


# Client level


def reference_dp_fedavg_round(params, clients, state, dp: dp_fedavg.ClientDP, clip_norm):
  """Per client: plain local SGD, delta, clip; sum over real clients, noise, / m, server SGD 1."""
  total, real, centred = jax.tree.map(np.zeros_like, params), 0, 0.0
  for c in range(clients.weight.shape[0]):
    if clients.weight[c] == 0:
      continue
    p = params
    for s in range(S):
      batch = {"image": clients.image[c, s], "label": clients.label[c, s],
               "mask": clients.mask[c, s]}
      if not batch["mask"].any():
        continue
      g = jax.grad(lambda q, b: linear_loss(q, b, None)[0])(p, batch)
      p = jax.tree.map(lambda x, gg: np.asarray(x) - LR * np.asarray(gg), p, g)
    delta = jax.tree.map(np.subtract, params, p)
    real += 1
    centred += float(_norm(delta) <= clip_norm) - 0.5  # sensitivity 1/2
    total = jax.tree.map(np.add, total, _clip_np(delta, clip_norm))
  key = jax.random.fold_in(jax.random.fold_in(state.rng, state.round), dp_fedavg.NOISE_STREAM)
  delta_key, count_key = jax.random.split(key)
  noise = mechanisms.gaussian_noise(delta_key, params, dp.delta_noise_multiplier() * clip_norm)
  pseudo = jax.tree.map(lambda t, z: (t + np.asarray(z)) / dp.expected_clients, total, noise)
  new_clip = clip_norm
  if dp.adaptive:
    b = (centred + dp.count_std() * float(jax.random.normal(count_key, ()))) / dp.expected_clients
    b = min(1.0, max(0.0, b + 0.5))
    new_clip = clip_norm * np.exp(-dp.clip_lr * (b - dp.target_quantile))
  return jax.tree.map(np.subtract, params, pseudo), new_clip


@pytest.mark.parametrize("quantile", [None, 0.5])
def test_dp_fedavg_rounds_match_reference(quantile):
  dp = dp_fedavg.ClientDP(0.8, 3.0, 0.3, quantile, 0.2, 2.0 if quantile else None)
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0),
                          plan=algorithms.RoundPlan(client_dp=dp))
  state = alg.init(make_params(), jax.random.PRNGKey(5))
  clients = make_clients()
  round_fn = jax.jit(alg.round)
  params, clip = state.params, dp.clip_norm
  for _ in range(3):
    expected, clip_next = reference_dp_fedavg_round(params, clients, state, dp, clip)
    state, metrics = round_fn(state, clients)
    chex.assert_trees_all_close(state.params, expected, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(float(metrics.privacy["clip_norm"]), clip, rtol=1e-5)
    np.testing.assert_allclose(float(state.privacy.clip_norm), clip_next, rtol=1e-5)
    params, clip = state.params, clip_next
  if quantile is None:
    assert float(state.privacy.clip_norm) == pytest.approx(0.3)


def test_dp_fedavg_without_noise_or_clipping_is_uniform_fedavg():
  clients = make_clients()
  m = float((clients.weight > 0).sum())
  dp = dp_fedavg.ClientDP(0.0, m, float("inf"))
  private = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0),
                              plan=algorithms.RoundPlan(client_dp=dp))
  uniform = clients._replace(weight=(clients.weight > 0).astype(np.float32))
  plain = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0))
  state = plain.init(make_params(), jax.random.PRNGKey(0))
  a, _ = jax.jit(plain.round)(state, uniform)
  b, _ = jax.jit(private.round)(private.init(make_params(), jax.random.PRNGKey(0)), clients)
  chex.assert_trees_all_close(a.params, b.params, atol=1e-6)


def test_empty_cohort_still_releases_noise():
  """No client in the round: the model still moves by the noise (an unchanged model would
  reveal that nobody took part)."""
  clients = make_clients()
  empty = clients._replace(weight=np.zeros_like(clients.weight), mask=np.zeros_like(clients.mask),
                           client_id=np.full_like(clients.client_id, -1))
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0), plan=algorithms.RoundPlan(
      client_dp=dp_fedavg.ClientDP(1.0, 2.0, 1.0)))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  new, _ = jax.jit(alg.round)(state, empty)
  assert _norm(jax.tree.map(jnp.subtract, new.params, state.params)) > 0


def test_adaptive_clipping_converges_to_target_quantile():
  """Norms ~ lognormal; without count noise, C converges to the target quantile of the norms."""
  rng = np.random.default_rng(0)
  dp = dp_fedavg.ClientDP(0.0, 200.0, 0.05, 0.7, 0.2, 1e-9)
  state = dp_fedavg.init(dp)
  zero = {"w": jnp.zeros(3)}
  release = jax.jit(lambda st, norms, key: dp_fedavg.release(
      dp, st, zero, norms, jnp.ones(200, bool), key).state)
  for t in range(300):
    norms = jnp.asarray(rng.lognormal(0.0, 0.5, 200), jnp.float32)
    state = release(state, norms, jax.random.PRNGKey(t))
  target = np.exp(0.5 * 0.5244)  # the 0.7 quantile of lognormal(0, 0.5): exp(sigma * z_0.7)
  assert float(state.clip_norm) == pytest.approx(target, rel=0.08)


def test_adaptive_noise_split():
  dp = dp_fedavg.ClientDP(1.0, 100.0, 1.0, 0.5)  # count noise 5: z_delta = (1 - 1/100)^-1/2
  assert dp.delta_noise_multiplier() == pytest.approx(1 / np.sqrt(1 - 1 / 100))
  with pytest.raises(ValueError, match="count noise"):
    dp_fedavg.ClientDP(4.0, 10.0, 1.0, 0.5, 0.2, 1.0).delta_noise_multiplier()


@pytest.mark.parametrize("name,level", [("scaffold", "record"), ("scaffold", "client"),
                                        ("feddyn", "client"), ("fedsam", "record"),
                                        ("fedexp", "client")])
def test_unsupported_levels_refused_by_builders(name, level):
  plan = algorithms.RoundPlan(num_clients=C, **{
      f"{level}_dp": dp_sgd.RecordDP(1.0, 1.0, B) if level == "record"
      else dp_fedavg.ClientDP(1.0, 2.0, 1.0)})
  with pytest.raises(ValueError, match=f"{level}-level"):
    algorithms.registry.build(name, linear_loss, optax.sgd(LR), optax.sgd(1.0), plan=plan,
                              client_lr=LR)


def test_centralized_dp_sgd_runs_every_step_of_the_real_client():
  clients = make_clients()
  one = jax.tree.map(lambda x: x[:1], clients)._replace(
      mask=np.zeros_like(clients.mask[:1]))  # every step empty: noise-only steps
  padded = jax.tree.map(lambda a, b: np.concatenate([a, b]), one,
                        types.ClientBatch(*(np.zeros_like(x[:1]) for x in one)))
  alg = algorithms.centralized(linear_loss, optax.sgd(LR), plan=algorithms.RoundPlan(
      record_dp=dp_sgd.RecordDP(1.0, 1.0, B)))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  new, metrics = jax.jit(alg.round)(state, padded)
  np.testing.assert_array_equal(metrics.client_steps, [S, 0])  # the padding client: none
  assert _norm(jax.tree.map(jnp.subtract, new.params, state.params)) > 0


# Correlated noise (BandMF)


def test_bandmf_noise_is_the_inverse_strategy_applied_to_the_draws():
  """Zero updates for T rounds: the released noise sequence is sigma C / m * C_T^-1 Z, with C_T
  the T x T lower-triangular banded Toeplitz matrix of the strategy (numpy solve)."""
  coef = (0.7, 0.5, 0.3, 0.2)
  coef = tuple(np.asarray(coef) / np.linalg.norm(coef))
  dp = dp_fedavg.ClientDP(1.3, 2.0, 0.5, strategy=coef)
  like = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((2,))}
  state = dp_fedavg.init(dp, like)
  release = jax.jit(lambda st, key: dp_fedavg.release(dp, st, like, jnp.zeros(1), jnp.zeros(1, bool),
                                                      key))
  rounds, noises, draws = 7, [], []
  for t in range(rounds):
    key = jax.random.PRNGKey(t)
    out = release(state, key)
    state = out.state
    noises.append(np.concatenate([np.ravel(out.pseudo_grad["b"]), np.ravel(out.pseudo_grad["w"])]))
    z = mechanisms.gaussian_noise(jax.random.split(key)[0], like, 1.0)
    draws.append(np.concatenate([np.ravel(z["b"]), np.ravel(z["w"])]))
  toeplitz = np.zeros((rounds, rounds))
  for i in range(rounds):
    for j, c in enumerate(coef):
      if i + j < rounds:
        toeplitz[i + j, i] = c
  expected = np.linalg.solve(toeplitz, np.stack(draws)) * 1.3 * 0.5 / 2.0
  np.testing.assert_allclose(np.stack(noises), expected, rtol=1e-4, atol=1e-5)


def test_one_band_is_the_gaussian_mechanism():
  like = {"w": jnp.zeros((4, 3))}
  total = {"w": jnp.ones((4, 3))}
  gaussian = dp_fedavg.ClientDP(0.9, 3.0, 1.0)
  banded = gaussian._replace(strategy=(1.0,))
  args = (total, jnp.ones(2), jnp.ones(2, bool), jax.random.PRNGKey(4))
  a = dp_fedavg.release(gaussian, dp_fedavg.init(gaussian, like), *args)
  b = dp_fedavg.release(banded, dp_fedavg.init(banded, like), *args)
  chex.assert_trees_all_close(a.pseudo_grad, b.pseudo_grad, rtol=1e-6)
