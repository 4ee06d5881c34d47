"""Runs with DP end to end: epsilon against an independent dp_accounting computation,
calibration, max_epsilon, compile-once, resume-exact, and the config errors."""

import json
import os

import chex
import dp_accounting
import jax
import numpy as np
import optax
import pytest

from fedjax_med import algorithms, errors, experiment, metrics, train
from fedjax_med.privacy import dp_fedavg, dp_sgd
from tests.testing import LR, linear_loss, make_clients, make_params
from tests.train_test import killed_then_resumed, small_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def independent_epsilon(sigma, q, steps, delta):
  """dp_accounting directly: Poisson-sampled Gaussian composed ``steps`` times (RDP)."""
  event = dp_accounting.GaussianDpEvent(sigma)
  if q < 1:
    event = dp_accounting.PoissonSampledDpEvent(q, event)
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(event, steps)
  return accountant.get_epsilon(delta)


def _records(workdir):
  return metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def test_record_level_epsilon_is_the_accountants_over_the_real_steps(data_root, tmp_path):
  config = small_config(data_root, **{"privacy.level": "record", "privacy.noise_multiplier": 1.1,
                                      "fl.clients_per_round": 6, "fl.rounds": 3})
  train.train_and_evaluate(config, str(tmp_path))
  summary = json.load(open(tmp_path / "summary.json"))
  sizes = json.load(open(tmp_path / "partition.json"))["sizes"]
  steps = 3 * config.fl.local_steps  # every client, every round, S noised steps (empty too)
  expected = max(independent_epsilon(1.1, min(1.0, 8 / n), steps, 1e-5) for n in sizes)
  assert summary["privacy"]["epsilon"] == pytest.approx(expected, rel=1e-9)
  assert summary["privacy"]["noised_steps"] == steps
  eps = [r["epsilon"] for r in _records(tmp_path) if r["split"] == "train"]
  assert eps == sorted(eps) and eps[0] > 0
  # every line carries it, evaluations included
  assert all("epsilon" in r for r in _records(tmp_path))


def test_record_level_partial_participation_counts_each_clients_rounds(data_root, tmp_path):
  config = small_config(data_root, **{"privacy.level": "record", "privacy.noise_multiplier": 1.0,
                                      "fl.clients_per_round": 2, "fl.rounds": 3})
  exp = experiment.build(config)
  from fedjax_med import batching

  taken = np.zeros(6, int)
  for r in range(3):
    taken[batching.sample_clients(6, 2, config.seed, r)] += 1
  q = batching.record_sampling_probs(exp.partition.sizes, 8)
  expected = max(independent_epsilon(1.0, q[c], int(taken[c]) * 3, 1e-5)
                 for c in range(6) if taken[c])
  assert exp.privacy.epsilon[3] == pytest.approx(expected, rel=1e-9)


def test_client_level_epsilon_and_calibration(data_root, tmp_path):
  config = small_config(data_root, **{"privacy.level": "client", "privacy.epsilon": 5.0,
                                      "privacy.delta": 1e-3, "fl.clients_per_round": 3})
  train.train_and_evaluate(config, str(tmp_path))
  p = json.load(open(tmp_path / "summary.json"))["privacy"]
  assert p["calibrated_from_epsilon"] and p["sampling_prob"] == 0.5
  assert p["epsilon"] == pytest.approx(independent_epsilon(p["noise_multiplier"], 0.5, 4, 1e-3),
                                       rel=1e-9)
  assert 5.0 * 0.99 <= p["epsilon"] <= 5.0  # calibrated: at the target, not above
  train_records = [r for r in _records(tmp_path) if r["split"] == "train"]
  assert all("clip_norm" in r and "unclipped_fraction" in r for r in train_records)


def test_max_epsilon_stops_before_the_round_that_would_cross_it(data_root, tmp_path):
  config = small_config(data_root, **{"privacy.level": "record", "privacy.noise_multiplier": 1.0,
                                      "privacy.max_epsilon": 6.0, "fl.rounds": 6})
  state = train.train_and_evaluate(config, str(tmp_path))
  summary = json.load(open(tmp_path / "summary.json"))
  done = summary["rounds_completed"]
  assert done == int(state.round) and 0 < done < 6
  assert summary["privacy"]["stopped_by_max_epsilon"]
  exp = experiment.build(config)
  assert exp.privacy.epsilon[done] <= 6.0 < exp.privacy.epsilon[done + 1]
  assert [r["round"] for r in _records(tmp_path) if r["split"] == "test"][-1] == done
  again = train.train_and_evaluate(config, str(tmp_path))  # a rerun spends nothing more
  assert int(again.round) == done


def test_adaptive_client_dp_resumes_exactly(data_root, tmp_path, monkeypatch):
  config = small_config(data_root, **{
      "privacy.level": "client", "privacy.noise_multiplier": 0.5, "privacy.delta": 1e-3,
      "privacy.target_quantile": 0.5, "privacy.count_noise": 1.0, "fl.clients_per_round": 3})
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  resumed = killed_then_resumed(config, tmp_path / "resumed", monkeypatch)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  logs = []
  for name in ("full", "resumed"):
    log = _records(tmp_path / name)
    for r in log:
      r.pop("elapsed_s", None)
    logs.append(log)
  assert logs[0] == logs[1]
  assert float(full.privacy.clip_norm) != 1.0  # adaptive clipping moved it


@pytest.mark.parametrize("level", ["record", "client"])
def test_dp_round_compiles_once(level):
  mechanism = (dp_sgd.RecordDP(1.0, 1.0, 4) if level == "record"
               else dp_fedavg.ClientDP(1.0, 2.0, 1.0, 0.5, 0.2, 1.0))
  alg = algorithms.fedavg(linear_loss, optax.sgd(LR), optax.sgd(1.0),
                          plan=algorithms.RoundPlan(**{f"{level}_dp": mechanism}))
  state = alg.init(make_params(), jax.random.PRNGKey(0))
  chex.clear_trace_counter()  # the counter is keyed by the code, shared by the parameters
  round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  for r in range(3):
    state, _ = round_fn(state, make_clients(seed=r))
  assert int(state.round) == 3


@pytest.mark.parametrize("overrides,named", [
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "privacy.epsilon": 3.0},
     "noise_multiplier / --config.privacy.epsilon"),
    ({"privacy.level": "record"}, "noise_multiplier / --config.privacy.epsilon"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "privacy.delta": 0.1},
     "privacy.delta"),
    ({"privacy.level": "client", "privacy.noise_multiplier": 1.0, "privacy.delta": 0.5},
     "privacy.delta"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "privacy.clip_norm": 0.0},
     "privacy.clip_norm"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "algorithm.name": "scaffold"},
     "privacy.level"),
    ({"privacy.level": "client", "privacy.noise_multiplier": 1.0, "algorithm.name": "fedexp"},
     "privacy.level"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "model.name": "resnet_tiny",
      "model.norm": "batch"}, "model.norm"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0,
      "privacy.target_quantile": 0.5}, "privacy.target_quantile"),
    ({"privacy.level": "client", "privacy.noise_multiplier": 4.0, "privacy.delta": 1e-3,
      "privacy.target_quantile": 0.5, "privacy.count_noise": 1.0}, "privacy.count_noise"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "privacy.max_epsilon": 0.01},
     "privacy.max_epsilon"),
    ({"privacy.level": "secret"}, "privacy.level"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0,
      "privacy.clip_norm": float("inf")}, "privacy.clip_norm"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0,
      "privacy.mechanism": "banded_mf"}, "privacy.mechanism"),
    ({"privacy.level": "client", "privacy.noise_multiplier": 1.0, "privacy.delta": 1e-3,
      "privacy.mechanism": "banded_mf", "privacy.bands": 3}, "privacy.bands"),  # 3 x 4 > 6
    ({"privacy.level": "client", "privacy.noise_multiplier": 1.0, "privacy.delta": 1e-3,
      "privacy.mechanism": "banded_mf", "privacy.bands": 2, "fl.clients_per_round": 2,
      "privacy.target_quantile": 0.5}, "privacy.target_quantile"),
    ({"privacy.level": "client", "privacy.noise_multiplier": 1.0, "privacy.delta": 1e-3,
      "privacy.mechanism": "fancy"}, "privacy.mechanism"),
])
def test_contradicting_privacy_settings_are_config_errors(data_root, tmp_path, overrides, named):
  with pytest.raises(errors.ConfigError, match=named.replace(".", r"\.")):
    train.train_and_evaluate(small_config(data_root, **overrides), str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")  # nothing written


def test_bandmf_run_accounts_cycles_samples_cyclically_and_resumes(data_root, tmp_path,
                                                                   monkeypatch):
  from fedjax_med import batching

  config = small_config(data_root, **{
      "privacy.level": "client", "privacy.noise_multiplier": 0.8, "privacy.delta": 1e-3,
      "privacy.mechanism": "banded_mf", "privacy.bands": 3, "fl.clients_per_round": 2,
      "fl.rounds": 5})
  exp = experiment.build(config)
  assert exp.privacy.bands == 3 and len(exp.plan.client_dp.strategy) == 3
  assert np.linalg.norm(exp.plan.client_dp.strategy) == pytest.approx(1.0, rel=1e-5)
  # q = bands * clients_per_round / num_clients = 1: ceil(r / 3) unamplified releases
  for r in range(1, 6):
    assert exp.privacy.epsilon[r] == pytest.approx(
        independent_epsilon(0.8, 1.0, -(-r // 3), 1e-3), rel=1e-9)
  seen = {}
  for r in range(30):  # every client's participations are >= bands rounds apart
    for c in batching.sample_clients_cyclic_poisson(6, 1.0, 3, config.seed, r):
      assert c not in seen or r - seen[c] >= 3
      seen[c] = r
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  assert full.privacy.history is not None
  resumed = killed_then_resumed(config, tmp_path / "resumed", monkeypatch)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))


def test_cyclic_poisson_frequency_within_the_eligible_rounds():
  from fedjax_med import batching

  groups = batching.cyclic_groups(40, 4, 0)
  assert sorted(np.bincount(groups).tolist()) == [10, 10, 10, 10]
  counts = np.zeros(40)
  rounds = 400
  for r in range(rounds):
    ids = batching.sample_clients_cyclic_poisson(40, 0.3, 4, 0, r)
    assert np.all(groups[ids] == r % 4)
    counts[ids] += 1
  # each client is eligible in 100 rounds, included with 0.3: 30 +- 5 sd (4.6)
  assert np.all(np.abs(counts - 30) < 5 * np.sqrt(100 * 0.3 * 0.7))


def test_record_calibration_uses_the_runs_own_participation(data_root):
  """With 2 of 6 clients a round no client takes every step: the calibrated noise spends the
  target exactly (not the worst case of a client in every round)."""
  config = small_config(data_root, **{"privacy.level": "record", "privacy.epsilon": 2.0,
                                      "fl.clients_per_round": 2, "fl.rounds": 3})
  exp = experiment.build(config)
  assert 2.0 * 0.99 <= exp.privacy.epsilon[-1] <= 2.0


def test_swa_with_client_dp_writes_its_summary(data_root, tmp_path):
  config = small_config(data_root, **{"privacy.level": "client", "privacy.noise_multiplier": 0.5,
                                      "privacy.delta": 1e-3, "algorithm.swa": True})
  train.train_and_evaluate(config, str(tmp_path))
  assert json.load(open(tmp_path / "summary.json"))["privacy"]["level"] == "client"


def test_infinite_target_with_partial_participation_means_no_noise(data_root):
  config = small_config(data_root, **{"privacy.level": "record",
                                      "privacy.epsilon": float("inf"), "fl.clients_per_round": 2})
  exp = experiment.build(config)
  assert exp.privacy.noise_multiplier == 0.0
