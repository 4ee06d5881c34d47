"""Simulated malicious clients (``algorithms.attacks``, issue 16 part 4).

The jitted FedAvg round under every attack is checked against a slow Python
reference: each client trained step by step (flipped labels for a malicious
client under ``label_flip``), its delta replaced as the attack says, in float64
NumPy, then averaged. Then: the seeded malicious set, Baruch et al.'s z, the
Gaussian draw's moments, an attack on nobody equals plain FedAvg, compile-once,
chunked == unchunked == sharded, a robust aggregator resisting what breaks the
mean, and the configuration errors.
"""

import json

import chex
import jax
import numpy as np
import optax
import pytest
from scipy import stats

from configs import base as base_config
from fedjax_med import config as config_lib
from fedjax_med import errors, sharding
from fedjax_med.algorithms import RoundPlan, aggregators, attacks, fedavg
from tests import testing

ROUND_C = 8  # slots of a round
FEDERATION = 16  # N: clients in the federation (ids 0..15), sampled 7 a round
# Slot -> client id: scattered (a slot is not its client's id); slot 3 is padding (-1).
IDS = (9, 1, 12, -1, 5, 14, 11, 7)
DROPPED = 6  # slot 6 (client 11, malicious) dropped out: weight 0, no data
BAD = (1, 5, 11)  # malicious ids: slots 1 and 4 report, slot 6 does not
BAD_SLOTS = (1, 4)


def round_clients(r: int):
  clients = testing.make_clients(num_clients=ROUND_C, seed=r)  # slot 3 weight 0
  weight, mask = clients.weight.copy(), clients.mask.copy()
  weight[DROPPED], mask[DROPPED] = 0.0, False
  return clients._replace(client_id=np.asarray(IDS, np.int32), weight=weight, mask=mask)


def attack(kind, scale=0.0, malicious=BAD):
  return attacks.Attack(kind, tuple(malicious), FEDERATION,
                        float(scale or attacks.DEFAULT_SCALE[kind]), testing.K)


# --- the slow reference ---


def client_delta(params, clients, c, flip=False):
  """One client's delta by explicit SGD steps (float32, as the round)."""
  p = params
  for s in range(testing.S):
    batch = {"image": clients.image[c, s], "label": clients.label[c, s],
             "mask": clients.mask[c, s]}
    if flip:
      batch["label"] = testing.K - 1 - batch["label"]
    if not batch["mask"].any():
      continue
    grads, _ = jax.grad(testing.linear_loss, has_aux=True)(p, batch, None)
    p = jax.tree.map(lambda x, g: x - testing.LR * g, p, grads)
  return {k: np.asarray(params[k], np.float64) - np.asarray(p[k], np.float64) for k in params}


def reference_round(kind, scale, params, clients):
  """FedAvg (server SGD lr 1) with the malicious clients' labels or deltas replaced."""
  real = [c for c in range(ROUND_C) if clients.weight[c] > 0]
  bad = [c for c in real if IDS[c] in BAD]  # by client id, not by slot
  honest = [c for c in real if IDS[c] not in BAD]
  assert bad == list(BAD_SLOTS) and len(real) == 6
  deltas = {c: client_delta(params, clients, c, flip=(kind == "label_flip" and c in bad))
            for c in real}
  s = scale or attacks.DEFAULT_SCALE[kind]
  for key in params:
    h = np.stack([deltas[c][key] for c in honest])
    mu, sigma = h.mean(0), h.std(0)  # population std, over the honest clients
    n, m = len(real), len(bad)
    z = s if s > 0 else stats.norm.ppf((n - (np.floor(n / 2 + 1) - m)) / n)
    for c in bad:
      own = deltas[c][key]
      deltas[c][key] = {"label_flip": own, "sign_flip": -s * own, "scaling": s * own,
                        "ipm": -s * mu, "alie": mu - z * sigma}[kind]
  total = sum(float(clients.weight[c]) for c in real)
  return {key: np.asarray(params[key], np.float64)
          - sum(float(clients.weight[c]) * deltas[c][key] for c in real) / total
          for key in params}


def run_rounds(atk, rounds=2, *, aggregator="mean", chunk_size=None, mesh=None,
               batch_fn=round_clients):
  alg = fedavg(testing.linear_loss, optax.sgd(testing.LR), optax.sgd(1.0),
               plan=RoundPlan(num_clients=FEDERATION, aggregator=aggregators.get(aggregator),
                              chunk_size=chunk_size, attack=atk))
  state = alg.init(testing.make_params(), jax.random.PRNGKey(0))
  if mesh is None:
    chex.clear_trace_counter()
    round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  else:
    round_fn = sharding.jit_round(alg.round, mesh, donate=False)
    state = sharding.replicate(state, mesh)
  metrics = None
  for r in range(rounds):
    clients = batch_fn(r)
    if mesh is not None:
      clients = sharding.shard_clients(clients, mesh)
    state, metrics = round_fn(state, clients)
  return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("kind,scale", [
    ("label_flip", 0.0), ("sign_flip", 0.0), ("sign_flip", 3.0), ("scaling", 0.0),
    ("ipm", 0.0), ("ipm", 2.0), ("alie", 0.0), ("alie", 1.5)])
def test_round_matches_the_python_reference(kind, scale):
  clients = round_clients(0)
  state, m = run_rounds(attack(kind, scale), rounds=1)
  want = reference_round(kind, scale, testing.make_params(), clients)
  chex.assert_trees_all_close(state.params, want, rtol=2e-5, atol=2e-6)
  if kind != "label_flip":  # the update norms reported are those of what was sent
    sent = np.asarray(m.update_norm)
    assert sent[3] == sent[DROPPED] == 0  # padding, dropped out
    honest = np.asarray(run_rounds(None, rounds=1)[1].update_norm)
    np.testing.assert_allclose(sent[[0, 2, 5, 7]], honest[[0, 2, 5, 7]], rtol=1e-6)
    if not (kind == "sign_flip" and scale == 0):  # -1 x delta keeps the norm
      assert not np.allclose(sent[list(BAD_SLOTS)], honest[list(BAD_SLOTS)])


def test_attack_on_nobody_equals_plain_fedavg():
  plain, _ = run_rounds(None, rounds=3)
  for kind in ("label_flip", "sign_flip", "alie", "gaussian"):
    nobody, _ = run_rounds(attack(kind, malicious=()), rounds=3)
    # float rounding only: the streamed and the stacked weighted sums fuse differently (1.5e-8)
    chex.assert_trees_all_close(nobody, plain, rtol=1e-6, atol=1e-7)


def test_gaussian_updates_have_the_stated_moments():
  num, dim = 6, 20_000
  rng = np.random.default_rng(0)
  deltas = {"a": rng.normal(size=(num, dim)).astype(np.float32),
            "b": rng.normal(size=(num, 4, 5)).astype(np.float32)}
  bad = np.array([False, True, False, False, True, False])
  atk = attacks.Attack("gaussian", (1, 4), num, 0.7)
  out = jax.jit(lambda d, k: attacks.poison_updates(atk, d, bad, np.ones(num, np.float32), k))(
      deltas, jax.random.PRNGKey(3))
  for c in (0, 2, 3, 5):  # honest rows untouched
    np.testing.assert_array_equal(out["a"][c], deltas["a"][c])
  for c in (1, 4):
    x = np.asarray(out["a"][c], np.float64)
    # mean within 5 standard errors; the std's standard error is ~ s / sqrt(2 dim)
    assert abs(x.mean()) < 5 * 0.7 / np.sqrt(dim)
    assert abs(x.std() - 0.7) < 5 * 0.7 / np.sqrt(2 * dim)
  assert not np.allclose(out["a"][1], out["a"][4])  # each malicious client draws its own
  assert np.all(np.asarray(out["b"][1]) != deltas["b"][1])


def test_malicious_set_is_seeded_distinct_and_sized():
  a = attacks.choose_malicious(100, 0.2, seed=7)
  assert a == attacks.choose_malicious(100, 0.2, seed=7)
  assert a != attacks.choose_malicious(100, 0.2, seed=8)
  assert len(a) == len(set(a)) == 20 and list(a) == sorted(a) and all(0 <= i < 100 for i in a)
  assert len(attacks.choose_malicious(10, 0.25, seed=0)) == 2  # round(2.5) = 2 (banker's)
  assert attacks.choose_malicious(10, 0.0, seed=0) == ()
  assert attacks.make("none", 10, 0.0, 0) is None
  made = attacks.make("scaling", 10, 0.3, seed=7)
  assert made.scale == 10.0 and made.malicious == attacks.choose_malicious(10, 0.3, 7)


@pytest.mark.parametrize("n,m", [(10, 1), (10, 2), (10, 3), (50, 10), (7, 3)])
def test_alie_z_is_baruchs(n, m):
  s = np.floor(n / 2 + 1) - m
  want = stats.norm.ppf((n - s) / n)
  np.testing.assert_allclose(attacks.alie_z(np.int32(n), np.int32(m)), want, rtol=1e-5,
                             atol=1e-6)


def test_label_flip_only_touches_the_malicious_reporting_clients():
  clients = round_clients(0)
  out = attacks.poison_data(attack("label_flip"), clients)
  for c in range(ROUND_C):  # slot 6 holds malicious client 11, dropped out: untouched
    want = testing.K - 1 - clients.label[c] if c in BAD_SLOTS else clients.label[c]
    np.testing.assert_array_equal(out.label[c], want)
  slots = attacks.malicious_slots(attack("label_flip"), clients.client_id, clients.weight)
  np.testing.assert_array_equal(np.flatnonzero(slots), BAD_SLOTS)


def test_multi_label_flip_complements_every_finding_of_malicious_clients():
  clients = round_clients(0)
  findings = np.random.default_rng(0).integers(0, 2, clients.label.shape + (5,), np.int32)
  clients = clients._replace(label=findings)  # [C, S, B, L] in {0, 1}
  made = attacks.make("label_flip", FEDERATION, 0.2, 0, num_classes=5, multi_label=True)
  out = attacks.poison_data(made._replace(malicious=BAD), clients)
  for c in range(ROUND_C):
    want = 1 - findings[c] if c in BAD_SLOTS else findings[c]
    np.testing.assert_array_equal(out.label[c], want)


@pytest.mark.parametrize("kind", ["label_flip", "sign_flip", "alie", "gaussian"])
def test_chunked_and_sharded_equal_the_plain_round_and_compile_once(kind):
  plain, _ = run_rounds(attack(kind))  # two rounds under assert_max_traces(n=1)
  chex.assert_trees_all_close(run_rounds(attack(kind), chunk_size=3)[0], plain,
                              rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(run_rounds(attack(kind), mesh=sharding.make_mesh(4))[0], plain,
                              rtol=1e-5, atol=1e-6)


def test_median_resists_what_breaks_the_mean():
  honest = run_rounds(None, rounds=3)[0].params
  for agg in ("mean", "median"):
    hit = run_rounds(attack("scaling", 100.0), rounds=3, aggregator=agg)[0].params
    dist = max(float(np.abs(hit[k] - honest[k]).max()) for k in hit)
    if agg == "mean":
      assert dist > 1.0, dist  # 2 of 6 reporting clients scaled 100x move the mean far
    else:
      assert dist < 0.2, dist  # the median stays among the honest deltas


def test_plan_errors():
  from fedjax_med.privacy import dp_fedavg

  pytest.importorskip("jax_privacy")
  with pytest.raises(ValueError, match="not simulated under client-level DP"):
    fedavg(testing.linear_loss, optax.sgd(0.1), optax.sgd(1.0),
           plan=RoundPlan(num_clients=ROUND_C, attack=attack("sign_flip"),
                          client_dp=dp_fedavg.ClientDP(1.0, 4.0, 1.0)))
  with pytest.raises(ValueError, match="attack is on 16 clients but plan.num_clients=0"):
    fedavg(testing.linear_loss, optax.sgd(0.1), optax.sgd(1.0),
           plan=RoundPlan(attack=attack("sign_flip")))
  with pytest.raises(ValueError, match="unknown attack kind"):
    attacks.make("flip", 10, 0.1, 0)
  with pytest.raises(ValueError, match="label_flip takes no scale"):
    attacks.make("label_flip", 10, 0.1, 0, scale=2.0, num_classes=2)


# --- configuration ---


def validated(**overrides):
  config = base_config.apply(base_config.get_config(), overrides)
  config_lib.validate(config_lib.resolve(config))


@pytest.mark.parametrize("overrides,match", [
    ({"attack.kind": "flip"}, r"attack\.kind='flip'.*label_flip"),
    ({"attack.kind": "sign_flip", "attack.fraction": 1.0}, r"attack\.fraction=1\.0.*\[0, 1\)"),
    ({"attack.fraction": 0.2}, r"attack\.fraction=0\.2.*attack\.kind"),
    ({"attack.kind": "gaussian", "attack.fraction": 0.2, "attack.scale": -1.0}, r"attack\.scale"),
    ({"attack.kind": "label_flip", "attack.fraction": 0.2, "attack.scale": 1.0},
     r"label_flip takes no scale"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.01}, r"= 0 clients malicious"),
    ({"attack.kind": "alie"}, r"attack\.fraction=0\.0.*= 0 clients malicious"),
    ({"attack.scale": 2.0}, r"attack\.scale=2\.0.*needs an attack"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.4, "aggregator.name": "krum"},
     r"4 malicious.*no setting can"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.5, "aggregator.name": "median",
      "fl.num_clients": 100}, r"5 malicious clients a round of 10 holds on average"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.2, "aggregator.name": "krum"},
     r"num_byzantine=1.*2 malicious.*f >= 2"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.3, "aggregator.name": "trimmed_mean"},
     r"trim_fraction=0\.1.*trim_fraction >= 0\.3"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.5, "aggregator.name": "median"},
     r"median tolerates fewer than half of a round's 10 clients, not the 5 malicious"),
    ({"attack.kind": "sign_flip", "attack.fraction": 0.2, "algorithm.name": "local"},
     r"no federated round to attack"),
])
def test_config_errors_name_the_key(overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    validated(**overrides)


def test_config_accepts_tolerated_attacks():
  validated(**{"attack.kind": "sign_flip", "attack.fraction": 0.3, "aggregator.name": "krum",
               "aggregator.num_byzantine": 3})
  validated(**{"attack.kind": "alie", "attack.fraction": 0.3, "aggregator.name": "trimmed_mean",
               "aggregator.trim_fraction": 0.3})
  validated(**{"attack.kind": "ipm", "attack.fraction": 0.4, "aggregator.name": "median"})
  validated(**{"attack.kind": "scaling", "attack.fraction": 0.9})  # the mean tolerates nothing
  # 10 of 100 malicious, 10 a round: one on average, which the median and Krum tolerate
  for name in ("median", "krum", "geometric_median"):
    validated(**{"attack.kind": "alie", "attack.fraction": 0.1, "fl.num_clients": 100,
                 "aggregator.name": name})


def test_client_dp_refuses_model_poisoning_but_not_label_flip():
  pytest.importorskip("jax_privacy")
  dp = {"privacy.level": "client", "privacy.noise_multiplier": 1.0, "attack.fraction": 0.2}
  with pytest.raises(errors.ConfigError, match=r"attack\.kind='sign_flip'.*client-level DP"):
    validated(**dp, **{"attack.kind": "sign_flip"})
  validated(**dp, **{"attack.kind": "label_flip"})


def test_cli_exits_2_with_one_line_before_writing(tmp_path):
  err = testing.assert_cli_refuses(tmp_path, "--config.attack.kind=alie",
                                   "--config.attack.fraction=0.6", "--config.aggregator.name=median")
  assert "attack.fraction=0.6" in err


@pytest.mark.slow
def test_training_records_the_attack(tmp_path):
  from fedjax_med import train

  config = testing.tiny_run_config(tmp_path, **{
      "fl.rounds": 2, "attack.kind": "sign_flip", "attack.fraction": 0.4,
      "aggregator.name": "median"})
  workdir = tmp_path / "run"
  train.train_and_evaluate(config, str(workdir))
  summary = json.loads((workdir / "summary.json").read_text())
  bad = list(attacks.choose_malicious(5, 0.4, config.seed))
  assert summary["attack"] == {"kind": "sign_flip", "fraction": 0.4, "scale": 1.0,
                               "malicious": bad}
  lines = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_lines = [x for x in lines if x["split"] == "train"]
  assert [x["malicious_clients"] for x in train_lines] == [2, 2]
  # the stacked deltas are held (median): 5 clients x the model's bytes
  assert summary["aggregator"]["stacked_delta_bytes"] > 0
