"""Robust aggregators (``algorithms.robust`` via ``aggregators.get``).

Each aggregator is checked against a slow NumPy reference (Python loops over
clients and coordinates, in float64) on random stacked updates with padding
clients (weight 0, filled with garbage that must never count) and a client full
of NaN: the reference sees only the real clients. Then: the weighting each one
uses, identical honest deltas, Krum on a constructed attack, compile-once, a
full FedAvg round under jit (chunked == unchunked == sharded; a NaN client ==
that client as padding), the config errors and the summary's memory record.

Weighting: median, trimmed mean, Krum and multi-Krum count every real client
once (unweighted); geometric median (RFA) and norm bounding use the client
weights.
"""

import json
import math

import chex
import jax
import numpy as np
import optax
import pytest

from configs import base as base_config
from fedjax_med import config as config_lib
from fedjax_med import errors, sharding
from fedjax_med.algorithms import RoundPlan, aggregators, fedavg
from tests import testing

C = 9
SHAPES = {"a": (3, 4), "b": (5,)}
ROBUST = ("median", "trimmed_mean", "krum", "multikrum", "geometric_median", "norm_bound")
# (name, params) cases: every aggregator, several hyper-parameters.
CASES = [
    ("median", {}),
    ("trimmed_mean", {"trim_fraction": 0.0}),
    ("trimmed_mean", {"trim_fraction": 0.2}),
    ("trimmed_mean", {"trim_fraction": 0.45}),
    ("krum", {"num_byzantine": 1}),
    ("krum", {"num_byzantine": 2}),
    ("multikrum", {"num_byzantine": 1, "multikrum_m": 0}),
    ("multikrum", {"num_byzantine": 1, "multikrum_m": 3}),
    ("geometric_median", {"gm_iters": 5, "gm_nu": 1e-6}),
    ("geometric_median", {"gm_iters": 50, "gm_nu": 0.5}),
    ("norm_bound", {"norm_bound": 1.5}),
]


# --- the NumPy references: lists of flat float64 vectors of the real clients ---


def ref_median(vecs, weights):
  del weights  # unweighted
  out = []
  for j in range(len(vecs[0])):
    col = sorted(v[j] for v in vecs)
    n = len(col)
    out.append(col[n // 2] if n % 2 else (col[n // 2 - 1] + col[n // 2]) / 2)
  return np.array(out)


def ref_trimmed_mean(vecs, weights, trim_fraction):
  del weights  # unweighted
  n = len(vecs)
  k = math.floor(trim_fraction * n)
  return np.array([np.mean(sorted(v[j] for v in vecs)[k:n - k]) for j in range(len(vecs[0]))])


def ref_krum_scores(vecs, num_byzantine):
  n = len(vecs)
  k = min(max(n - num_byzantine - 2, 1), max(n - 1, 1))
  scores = []
  for i in range(n):
    d = sorted(float(np.sum((vecs[i] - vecs[j]) ** 2)) for j in range(n) if j != i)
    scores.append(sum(d[:k]))
  return scores


def ref_multikrum(vecs, weights, num_byzantine, multikrum_m=0):
  del weights  # unweighted
  n = len(vecs)
  m = n - num_byzantine if multikrum_m == 0 else multikrum_m
  m = min(max(m, 1), n)
  order = np.argsort(ref_krum_scores(vecs, num_byzantine), kind="stable")
  return np.mean([vecs[i] for i in order[:m]], axis=0)


def ref_krum(vecs, weights, num_byzantine):
  return ref_multikrum(vecs, weights, num_byzantine, 1)


def ref_geometric_median(vecs, weights, gm_iters, gm_nu):
  alpha = np.asarray(weights, np.float64)
  v = sum(a * x for a, x in zip(alpha, vecs, strict=True)) / alpha.sum()
  for _ in range(gm_iters):
    beta = [a / max(gm_nu, np.linalg.norm(v - x)) for a, x in zip(alpha, vecs, strict=True)]
    v = sum(b * x for b, x in zip(beta, vecs, strict=True)) / sum(beta)
  return v


def ref_norm_bound(vecs, weights, norm_bound):
  clipped = [x * min(1.0, norm_bound / np.linalg.norm(x)) for x in vecs]
  return sum(w * x for w, x in zip(weights, clipped, strict=True)) / sum(weights)


REFS = {"median": ref_median, "trimmed_mean": ref_trimmed_mean, "krum": ref_krum,
        "multikrum": ref_multikrum, "geometric_median": ref_geometric_median,
        "norm_bound": ref_norm_bound}


# --- stacked updates ---


def flat(tree) -> np.ndarray:
  """One client's delta as a flat float64 vector (leaves in sorted key order)."""
  return np.concatenate([np.asarray(tree[k], np.float64).ravel() for k in sorted(SHAPES)])


def unflat(vec):
  out, i = {}, 0
  for k in sorted(SHAPES):
    size = math.prod(SHAPES[k])
    out[k] = vec[i:i + size].reshape(SHAPES[k])
    i += size
  return out


def make_updates(seed, padding=(2, 6), nan=(4,), inf=()):
  """Random stacked deltas [C, ...]: padding rows (weight 0) hold garbage, ``nan`` rows are all
  NaN, ``inf`` rows have one infinite entry."""
  rng = np.random.default_rng(seed)
  deltas = {k: rng.normal(size=(C,) + s).astype(np.float32) for k, s in SHAPES.items()}
  weights = rng.uniform(1, 20, size=C).astype(np.float32)
  for c in padding:
    weights[c] = 0.0
    deltas["a"][c] = 1e6  # would dominate any statistic it entered
  for c in nan:
    deltas["a"][c] = np.nan
    deltas["b"][c] = np.nan
  for c in inf:
    deltas["b"][c, 1] = np.inf
  real = [c for c in range(C) if c not in padding + nan + inf]
  return deltas, weights, real


def reference(name, params, deltas, weights, real):
  vecs = [flat({k: v[c] for k, v in deltas.items()}) for c in real]
  return unflat(REFS[name](vecs, [float(weights[c]) for c in real], **params))


@pytest.mark.parametrize("name,params", CASES)
@pytest.mark.parametrize("seed,layout", [
    (10, {"padding": (2, 6), "nan": (4,)}),  # 6 real clients (even)
    (11, {"padding": (0, 2), "nan": (4,), "inf": (7,)}),  # 5 real clients (odd)
    (12, {"padding": (0, 1, 2, 3), "nan": (4, 5)}),  # 3 real: Krum's neighbour count clipped to 1
])
def test_matches_numpy_reference_without_the_excluded_clients(name, params, seed, layout):
  deltas, weights, real = make_updates(seed, **layout)
  got = jax.jit(aggregators.get(name, **params).aggregate)(deltas, weights)
  want = reference(name, params, deltas, weights, real)
  # float32 against float64; the Weiszfeld iterations accumulate a little more error.
  chex.assert_trees_all_close(got, want, rtol=2e-4 if name == "geometric_median" else 1e-5,
                              atol=1e-5)


@pytest.mark.parametrize("name", ROBUST)
def test_no_real_client_gives_zero_change(name):
  deltas, weights, _ = make_updates(seed=0, padding=(0, 1, 2, 3, 5, 6, 7, 8), nan=(4,))
  got = jax.jit(aggregators.get(name, **aggregators.DEFAULTS).aggregate)(deltas, weights)
  chex.assert_trees_all_equal(got, jax.tree.map(lambda x: np.zeros_like(x[0]), deltas))


@pytest.mark.parametrize("name,params", [
    ("median", {}), ("trimmed_mean", {"trim_fraction": 0.2}), ("krum", {"num_byzantine": 1}),
    ("multikrum", {"num_byzantine": 1, "multikrum_m": 0})])
def test_order_statistics_and_krum_ignore_the_weights(name, params):
  deltas, weights, real = make_updates(seed=3)
  agg = jax.jit(aggregators.get(name, **params).aggregate)
  reweighted = np.where(weights > 0, np.arange(1, C + 1) ** 3, 0).astype(np.float32)
  chex.assert_trees_all_close(agg(deltas, weights), agg(deltas, reweighted), rtol=0, atol=0)


def real_mean(deltas, real, weights=None):
  w = np.ones(len(real)) if weights is None else np.asarray([weights[c] for c in real])
  return {k: sum(wi * v[c].astype(np.float64) for wi, c in zip(w, real, strict=True)) / w.sum()
          for k, v in deltas.items()}


def test_trimmed_mean_zero_and_full_multikrum_are_the_unweighted_mean():
  deltas, weights, real = make_updates(seed=5)
  unweighted, weighted = real_mean(deltas, real), real_mean(deltas, real, weights)
  trimmed = aggregators.get("trimmed_mean", trim_fraction=0.0).aggregate(deltas, weights)
  full_krum = aggregators.get("multikrum", num_byzantine=0, multikrum_m=len(real)).aggregate(
      deltas, weights)
  for got in (trimmed, full_krum):
    chex.assert_trees_all_close(got, unweighted, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["b"], weighted["b"], rtol=1e-3)  # the weights do differ here


def test_norm_bound_is_the_weighted_mean_when_nothing_is_clipped():
  deltas, weights, real = make_updates(seed=6)
  got = aggregators.get("norm_bound", norm_bound=1e6).aggregate(deltas, weights)
  chex.assert_trees_all_close(got, real_mean(deltas, real, weights), rtol=1e-5, atol=1e-6)
  # A small bound: every real delta has norm exactly tau before the weighted mean.
  tau = 0.1
  got = aggregators.get("norm_bound", norm_bound=tau).aggregate(deltas, weights)
  scaled = {k: v * 1.0 for k, v in deltas.items()}
  for c in real:
    norm = np.linalg.norm(flat({k: v[c] for k, v in deltas.items()}))
    for k in scaled:
      scaled[k][c] = deltas[k][c] * (tau / norm)
  chex.assert_trees_all_close(got, real_mean(scaled, real, weights), rtol=1e-5, atol=1e-7)


def test_geometric_median_uses_the_client_weights():
  # Two real clients: Weiszfeld converges to the heavier one (the weighted 1-median).
  deltas = {"a": np.array([[0.0, 0.0], [1.0, 1.0], [7.0, 7.0]], np.float32)}
  weights = np.array([3.0, 1.0, 0.0], np.float32)
  got = aggregators.get("geometric_median", gm_iters=200, gm_nu=1e-8).aggregate(deltas, weights)
  np.testing.assert_allclose(got["a"], [0.0, 0.0], atol=1e-3)
  swapped = aggregators.get("geometric_median", gm_iters=200, gm_nu=1e-8).aggregate(
      deltas, np.array([1.0, 3.0, 0.0], np.float32))
  np.testing.assert_allclose(swapped["a"], [1.0, 1.0], atol=1e-3)


@pytest.mark.parametrize("name", ROBUST)
def test_identical_honest_deltas_are_returned(name):
  rng = np.random.default_rng(7)
  one = {k: rng.normal(size=s).astype(np.float32) for k, s in SHAPES.items()}
  deltas = {k: np.repeat(v[None], C, 0) for k, v in one.items()}
  weights = rng.uniform(1, 5, size=C).astype(np.float32)
  weights[[1, 5]] = 0.0
  deltas["a"][[1, 5]] = -3e4  # padding garbage
  deltas["b"][3] = np.nan  # a failed client
  params = {"norm_bound": 1e3} if name == "norm_bound" else {}
  got = jax.jit(aggregators.get(name, **params).aggregate)(deltas, weights)
  chex.assert_trees_all_close(got, one, rtol=1e-6, atol=1e-6)


def test_krum_picks_the_known_honest_client():
  """7 honest clients: the centre v (client 3) and v + eps e_k; 2 Byzantine far away, with huge
  weights. Krum with f=2 scores the centre (n - f - 2 = 5) * eps^2, every other honest client
  eps^2 + 4 * 2 eps^2, the Byzantine ones ~1e4: it returns client 3, and multi-Krum (m = n - f
  = 7) the honest mean."""
  rng = np.random.default_rng(8)
  dim, eps = 12, 0.01
  v = rng.normal(size=dim).astype(np.float32)
  honest = [0, 1, 2, 3, 4, 6, 7]
  x = np.zeros((C, dim), np.float32)
  for k, c in enumerate(c for c in honest if c != 3):
    x[c] = v + eps * np.eye(dim, dtype=np.float32)[k]
  x[3] = v
  x[5], x[8] = v + 100 * rng.normal(size=dim), v - 100 * rng.normal(size=dim)
  weights = np.ones(C, np.float32)
  weights[[5, 8]] = 1e4  # claiming many examples buys nothing
  deltas = {"w": x}
  got = aggregators.get("krum", num_byzantine=2).aggregate(deltas, weights)
  np.testing.assert_array_equal(got["w"], x[3])
  got = aggregators.get("multikrum", num_byzantine=2).aggregate(deltas, weights)
  np.testing.assert_allclose(got["w"], x[honest].mean(0), rtol=1e-6)
  mean = aggregators.get("stacked_mean").aggregate(deltas, weights)
  assert np.linalg.norm(mean["w"] - v) > 10  # what plain averaging does


@pytest.mark.parametrize("name", ROBUST)
def test_compiles_once_over_padding_and_failures(name):
  chex.clear_trace_counter()
  aggregate = aggregators.get(name, **aggregators.DEFAULTS).aggregate

  def traced(deltas, weights):  # chex counts traces of a function, not of a partial
    return aggregate(deltas, weights)

  agg = jax.jit(chex.assert_max_traces(traced, n=1))
  for seed, layout in enumerate([{}, {"padding": (0, 1, 2)}, {"nan": (), "inf": (3, 4)}]):
    deltas, weights, _ = make_updates(seed, **layout)
    jax.block_until_ready(agg(deltas, weights))


# --- a full FedAvg round ---

ROUND_C = 8


def round_clients(r: int):
  clients = testing.make_clients(num_clients=ROUND_C, seed=r)  # client 3 is padding
  return clients._replace(client_id=np.arange(ROUND_C, dtype=np.int32))


def run_rounds(name, rounds=2, *, chunk_size=None, mesh=None, batch_fn=round_clients):
  alg = fedavg(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
               plan=RoundPlan(aggregator=aggregators.get(name, **aggregators.DEFAULTS),
                              chunk_size=chunk_size))
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  if mesh is None:
    chex.clear_trace_counter()
    round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  else:
    round_fn = sharding.jit_round(alg.round, mesh, donate=False)
    state = sharding.replicate(state, mesh)
  for r in range(rounds):
    clients = batch_fn(r)
    if mesh is not None:
      clients = sharding.shard_clients(clients, mesh)
    state, _ = round_fn(state, clients)
  return jax.device_get(state)


@pytest.mark.parametrize("name", ROBUST)
def test_fedavg_round_chunked_sharded_and_with_a_failed_client(name):
  plain = run_rounds(name)
  assert int(plain.round) == 2
  moved = np.abs(plain.params["w"] - np.asarray(testing.make_params()["w"])).max()
  assert np.isfinite(plain.params["w"]).all() and moved > 0
  # Chunks of 3 (8 clients padded to 9 in the scan): the same stacked deltas.
  chex.assert_trees_all_close(run_rounds(name, chunk_size=3), plain, rtol=1e-6, atol=1e-7)
  # Clients sharded over 4 devices: sorts and distances over a sharded client axis.
  chex.assert_trees_all_close(run_rounds(name, mesh=sharding.make_mesh(4)), plain,
                              rtol=1e-5, atol=1e-6)

  # Client 5's images are NaN, so its delta is: the round equals client 5 as padding.
  def poisoned(r):
    clients = round_clients(r)
    image = clients.image.copy()
    image[5] = np.nan
    return clients._replace(image=image)

  def dropped(r):
    clients = round_clients(r)
    weight = clients.weight.copy()
    weight[5] = 0.0
    return clients._replace(weight=weight)

  chex.assert_trees_all_close(run_rounds(name, rounds=1, batch_fn=poisoned),
                              run_rounds(name, rounds=1, batch_fn=dropped), rtol=1e-6, atol=1e-7)


# --- configuration ---


def validated(**overrides):
  config = base_config.apply(base_config.get_config(), overrides)
  config_lib.validate(config_lib.resolve(config))


@pytest.mark.parametrize("overrides,match", [
    ({"aggregator.name": "krumm"}, r"aggregator\.name='krumm'.*multikrum"),
    ({"aggregator.name": "krum", "aggregator.num_byzantine": 4}, r"num_byzantine=4.*2f \+ 2"),
    ({"aggregator.name": "multikrum", "fl.clients_per_round": 4, "fl.num_clients": 4},
     r"num_byzantine=1.*2f \+ 2 < fl.clients_per_round=4"),
    ({"aggregator.name": "multikrum", "aggregator.multikrum_m": 10}, r"multikrum_m=10"),
    ({"aggregator.name": "trimmed_mean", "aggregator.trim_fraction": 0.5},
     r"trim_fraction=0.5.*\[0, 0.5\)"),
    ({"aggregator.name": "trimmed_mean", "aggregator.trim_fraction": -0.1}, r"trim_fraction"),
    ({"aggregator.name": "geometric_median", "aggregator.gm_iters": 0}, r"gm_iters=0"),
    ({"aggregator.name": "geometric_median", "aggregator.gm_nu": 0.0}, r"gm_nu=0.0"),
    ({"aggregator.name": "norm_bound", "aggregator.norm_bound": -1.0}, r"norm_bound=-1.0"),
    ({"aggregator.name": "median", "algorithm.name": "local"}, r"aggregator\.name.*use mean"),
])
def test_config_errors_name_the_key(overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    validated(**overrides)


def test_config_accepts_every_aggregator_and_ignores_the_others_params():
  for name in aggregators.AGGREGATORS:
    # trim_fraction is only checked when trimmed_mean is chosen.
    bad_for_others = {} if name == "trimmed_mean" else {"aggregator.trim_fraction": 0.7}
    validated(**{"aggregator.name": name, **bad_for_others})
  validated(**{"aggregator.name": "krum", "aggregator.num_byzantine": 3})  # 2*3 + 2 < 10


def test_client_level_dp_refuses_a_robust_aggregator():
  pytest.importorskip("jax_privacy")
  with pytest.raises(errors.ConfigError, match=r"aggregator\.name='median'.*client-level DP"):
    validated(**{"aggregator.name": "median", "privacy.level": "client",
                 "privacy.noise_multiplier": 1.0})
  with pytest.raises(ValueError, match="client-level DP replaces the aggregator"):
    from fedjax_med.privacy import dp_fedavg

    fedavg(testing.linear_loss, optax.sgd(0.1), optax.sgd(1.0),
           plan=RoundPlan(aggregator=aggregators.get("median"),
                          client_dp=dp_fedavg.ClientDP(1.0, 4.0, 1.0)))


def test_get_errors():
  with pytest.raises(ValueError, match="unknown aggregator 'krumm'"):
    aggregators.get("krumm")
  with pytest.raises(ValueError, match="unknown aggregator hyper-parameter"):
    aggregators.get("krum", num_byzanine=1)
  with pytest.raises(ValueError, match="num_byzantine"):
    aggregators.get("krum", num_byzantine=-1)


def test_cli_exits_2_with_one_line_before_writing(tmp_path):
  err = testing.assert_cli_refuses(tmp_path, "--config.aggregator.name=krum",
                                   "--config.aggregator.num_byzantine=50")
  assert "aggregator.num_byzantine=50" in err


@pytest.mark.slow
def test_summary_records_the_stacked_delta_memory(tmp_path):
  from fedjax_med import train

  config = testing.tiny_run_config(tmp_path, **{"aggregator.name": "median"})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  summary = json.loads((tmp_path / "run" / "summary.json").read_text())
  from fedjax_med import models, tasks

  model = models.get_model("cnn_tiny", 2)
  shapes = jax.eval_shape(lambda k: tasks.init_variables(model, k, (28, 28, 1)),
                          jax.random.PRNGKey(0))
  size = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
  assert summary["aggregator"] == {"name": "median", "stacked_delta_bytes": 5 * size * 4}
  assert np.isfinite(summary["test"]["loss"])
