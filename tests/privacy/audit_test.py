"""The empirical privacy audit: the auditor plumbing on known scores, canary insertion and
inclusion, the lower bound against the accountant's epsilon end to end, and the CLI."""

import json

import chex
import jax
import numpy as np
import pytest

from fedjax_med import errors, experiment, tasks
from fedjax_med.cli import privacy_audit as cli
from fedjax_med.data import synthetic
from fedjax_med.privacy import audit
from tests.train_test import small_config

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# small_config has 6 clients: client-level delta must be below 1/6.
DELTA = 1e-3


def dp_config(data_root, level, **overrides):
  return small_config(data_root, **{"privacy.level": level, "privacy.delta": DELTA,
                                    **overrides})


# ------------------------------------------------------------------ the auditor's plumbing


def test_separable_scores_give_a_positive_bound_below_the_ceiling():
  included = audit.draw_inclusion(200, seed=0)
  scores = np.where(included, 1.0, 0.0) + 1e-4 * np.arange(200)  # every "in" above every "out"
  bound = audit.empirical_epsilon(scores, included, delta=1e-5)
  assert bound["auc"] == 1.0
  assert bound["epsilon_lower_bound"] > 2.0  # the test has power
  # a perfect attack is the ceiling (the same counts, the same thresholds)
  assert bound["epsilon_lower_bound"] == pytest.approx(bound["epsilon_ceiling"], rel=1e-6)
  assert bound["canaries_in"] + bound["canaries_out"] == 200


def test_reversed_or_uninformative_scores_give_no_bound():
  included = audit.draw_inclusion(200, seed=1)
  reversed_ = audit.empirical_epsilon(np.where(included, 0.0, 1.0), included, delta=1e-5)
  # the auditor's AUC is the ROC convex hull's (a reversed test is also a test): >= 1/2
  assert reversed_["auc"] == 0.5 and reversed_["epsilon_lower_bound"] == 0.0
  rng = np.random.default_rng(0)
  random = audit.empirical_epsilon(rng.normal(size=200), included, delta=1e-5)
  assert random["epsilon_lower_bound"] == 0.0


def test_more_canaries_raise_the_ceiling():
  ceiling = [audit.empirical_epsilon(*_perfect(m), delta=1e-5)["epsilon_ceiling"]
             for m in (50, 500)]
  assert 0 < ceiling[0] < ceiling[1] < np.log(500)


def _perfect(m):
  included = audit.draw_inclusion(m, seed=0)
  return included.astype(float), included


def test_one_sided_canaries_are_refused():
  with pytest.raises(errors.ConfigError, match="all 3 canaries"):
    audit.empirical_epsilon(np.zeros(3), np.ones(3, bool), delta=1e-5)


# ------------------------------------------------------------------ canaries


def test_inclusion_is_seeded_and_about_half():
  a = audit.draw_inclusion(2000, seed=3)
  np.testing.assert_array_equal(a, audit.draw_inclusion(2000, seed=3))
  assert not np.array_equal(a, audit.draw_inclusion(2000, seed=4))
  # Binomial(2000, 1/2): std 22; 5 std either side
  assert abs(int(a.sum()) - 1000) < 112
  # a prefix of a longer draw: inclusion depends only on (seed, canary index)
  np.testing.assert_array_equal(audit.draw_inclusion(100, seed=3), a[:100])


def test_record_canaries_join_their_clients_and_the_accountant_sees_them(data_root):
  exp = experiment.build(dp_config(data_root, "record", **{"privacy.noise_multiplier": 1.0}))
  canaries = audit.record_canaries(exp.dataset, exp.partition, 40, seed=0)
  np.testing.assert_array_equal(canaries.included, audit.draw_inclusion(40, seed=0))
  assert canaries.images.shape == (40, *exp.dataset.image_shape)
  assert canaries.reference.shape == canaries.images.shape
  assert set(np.unique(canaries.labels)) <= {0, 1}
  new = audit.add_record_canaries(exp, canaries)
  n = len(exp.dataset.train.labels)
  m_in = int(canaries.included.sum())
  assert len(new.dataset.train.labels) == n + m_in
  added = np.bincount(canaries.clients[canaries.included], minlength=exp.partition.num_clients)
  np.testing.assert_array_equal(new.partition.sizes, exp.partition.sizes + added)
  for c in range(exp.partition.num_clients):  # the old examples, then the client's canaries
    own = new.partition.client(c)
    np.testing.assert_array_equal(own[: exp.partition.sizes[c]], exp.partition.client(c))
    got = new.dataset.train.images[own[exp.partition.sizes[c]:]]
    np.testing.assert_array_equal(
        got, canaries.images[canaries.included & (canaries.clients == c)])
  # the plan is recomputed on the new sizes: larger clients, smaller q, smaller epsilon
  assert new.privacy.sampling_prob <= exp.privacy.sampling_prob
  assert new.privacy.epsilon[-1] <= exp.privacy.epsilon[-1]
  assert new.plan.record_dp == new.privacy.mechanism


@pytest.mark.slow
def test_client_canary_round_equals_the_algorithms_round_without_canaries(data_root):
  """The canary-aware round is FedAvg's round: with no canary in the batch it is bit-equal."""
  exp = experiment.build(dp_config(data_root, "client", **{"privacy.noise_multiplier": 1.0,
                                                          "fl.clients_per_round": 3}))
  none_included = np.zeros(8, bool)
  new, make_batch = audit.add_client_canaries(exp, none_included, seed=0)
  pad = new.round_clients
  batch = make_batch(0, pad)
  state = exp.initial_state()
  ref = jax.jit(exp.algorithm.round)(state, batch)
  got = jax.jit(new.algorithm.round)(state, batch)
  chex.assert_trees_all_equal(ref, got)


def test_client_canaries_upload_their_direction_clipped(data_root):
  exp = experiment.build(dp_config(data_root, "client", **{"privacy.noise_multiplier": 0.0,
                                                          "fl.clients_per_round": 6,
                                                          "fl.server_lr": 1.0}))
  included = np.array([True, False, True])
  new, make_batch = audit.add_client_canaries(exp, included, seed=0)
  assert new.partition.num_clients == 8  # 6 real clients + 2 included canaries
  batch = make_batch(0, new.round_clients)  # q = 1: everyone takes part
  canary_rows = batch.client_id >= 6
  assert canary_rows.sum() == 2 and (batch.weight[canary_rows] == 1).all()
  assert not batch.mask[canary_rows].any()
  assert sorted(batch.label[canary_rows][:, 0, 0]) == [-3, -1]  # canaries 2 and 0
  state = exp.initial_state()
  after, metrics = jax.jit(new.algorithm.round)(state, batch)
  # a canary's update is 10 x the clip norm before clipping
  np.testing.assert_allclose(metrics.update_norm[canary_rows], 10.0, rtol=1e-4)
  scores = audit.client_scores(state.params, after.params, 3, seed=0)
  assert scores[0] > 0.1 and scores[2] > 0.1 and abs(scores[1]) < 0.1


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("level", ["record", pytest.param("client", marks=pytest.mark.slow)])
def test_lower_bound_never_exceeds_the_accountants_epsilon(data_root, level):
  config = dp_config(data_root, level, **{"privacy.epsilon": 2.0, "fl.rounds": 3})
  result = audit.audit(config, 40)
  assert result["level"] == level and result["num_canaries"] == 40
  assert result["canaries_in"] + result["canaries_out"] == 40
  assert 0 <= result["epsilon_lower_bound"] <= result["accountant_epsilon"]
  # calibrated for 2 (record level: for the worst client in every round, so at most 2)
  assert 0 < result["accountant_epsilon"] <= 2.0 * (1 + 1e-9)
  assert result["consistent"] and 0 <= result["tightness"] <= 1
  assert 0 <= result["auc"] <= 1
  json.dumps(result, allow_nan=False)


@pytest.mark.slow
def test_without_noise_client_canaries_are_found(data_root):
  """The audit has power: with no noise the canaries stand out and the bound is > 0."""
  config = dp_config(data_root, "client", **{"privacy.noise_multiplier": 0.0, "fl.rounds": 4})
  result = audit.audit(config, 64)
  assert result["auc"] > 0.95
  assert result["epsilon_lower_bound"] > 0.5
  assert result["accountant_epsilon"] == float("inf") and result["tightness"] is None


@pytest.mark.slow
def test_without_noise_record_canaries_score_higher_when_included(data_root):
  config = dp_config(data_root, "record", **{"privacy.noise_multiplier": 0.0, "fl.rounds": 16})
  result = audit.audit(config, 64)
  assert result["auc"] > 0.7
  assert result["score_mean_in"] > result["score_mean_out"]


def test_client_level_refuses_algorithms_outside_the_fedavg_family(data_root):
  config = dp_config(data_root, "client", **{"privacy.noise_multiplier": 1.0,
                                            "algorithm.name": "fedprox"})
  with pytest.raises(errors.ConfigError, match="fedavg"):
    audit.audit(config, 10)


# ------------------------------------------------------------------ multi-label (ChestMNIST)


@pytest.fixture(scope="module")
def chest_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("chest")
  synthetic.write_npz(root / "chestmnist.npz", name="chestmnist", n_train=240, n_val=60,
                      n_test=30)
  return str(root)


def chest_config(chest_root, level, **overrides):
  return dp_config(chest_root, level, **{"data.name": "chestmnist", "data.augment": "none",
                                         "privacy.noise_multiplier": 1.0, **overrides})


@pytest.mark.parametrize("kind", ["noise", "mislabeled"])
def test_multi_label_record_canaries_are_scored_by_the_mean_bce(chest_root, kind):
  exp = experiment.build(chest_config(chest_root, "record"))
  canaries = audit.record_canaries(exp.dataset, exp.partition, 12, seed=0, kind=kind)
  assert canaries.labels.shape == (12, 14) and set(np.unique(canaries.labels)) <= {0, 1}
  if kind == "mislabeled":  # each a validation image with at least one finding flipped
    val = exp.dataset.val
    for image, label in zip(canaries.images, canaries.labels, strict=True):
      j = int(np.flatnonzero((val.images == image).all(axis=(1, 2, 3)))[0])
      assert (label != val.labels[j]).any()
  state = exp.initial_state()
  scores = audit.record_scores(exp, state, canaries)
  predict = tasks.make_predict_fn(exp.model)

  def bce(logits, y):  # [n, L] per finding, float64
    z = np.asarray(logits, np.float64)
    return np.logaddexp(0, z) - y * z

  want = -bce(predict(state.params, canaries.images), canaries.labels).mean(1)
  if kind == "noise":  # minus its loss plus its label's baseline on the reference images
    ref = np.asarray(predict(state.params, canaries.reference), np.float64)
    for i, y in enumerate(canaries.labels):
      want[i] += np.mean([bce(ref[:, k], y[k]).mean() for k in range(14)])
  np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-6)


def test_multi_label_record_audit_trains_with_dp_sgd(chest_root):
  result = audit.audit(chest_config(chest_root, "record", **{"fl.rounds": 2}), 20)
  assert 0 <= result["epsilon_lower_bound"] <= result["accountant_epsilon"]
  assert np.isfinite(result["score_mean_in"]) and np.isfinite(result["score_mean_out"])


def test_multi_label_client_canaries_mark_every_label(chest_root):
  exp = experiment.build(chest_config(chest_root, "client", **{"fl.clients_per_round": 6}))
  new, make_batch = audit.add_client_canaries(exp, np.array([True, False, True]), seed=0)
  batch = make_batch(0, new.round_clients)
  rows = batch.client_id >= 6
  assert batch.label.ndim == 4 and rows.sum() == 2
  assert sorted(np.unique(batch.label[rows][i]).item() for i in range(2)) == [-3, -1]


# ------------------------------------------------------------------ CLI


def _cli(args, capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(args)
  return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    ([], "privacy.level=none"),
    (["--config.privacy.level=record", "--canaries=1"], "--canaries must be >= 2"),
    (["--config.privacy.level=record", "--confidence=1.5"], "--confidence"),
    (["--config.fl.clent_lr=0.1"], "unknown config key"),
])
def test_cli_bad_input_exits_2_with_one_line(data_root, capsys, extra, message):
  code, err = _cli(["--config=quickstart", f"--config.data.root={data_root}",
                    "--config.data.download=False", *extra], capsys)
  assert code == 2
  assert message in err and len(err.strip().splitlines()) == 1


def test_cli_writes_audit_json_and_reports(data_root, tmp_path, capsys):
  args = [f"--config={_config_file(tmp_path, data_root)}", "--config.privacy.level=client",
          f"--config.privacy.delta={DELTA}", "--config.privacy.noise_multiplier=1.0",
          "--config.fl.rounds=2", "--canaries=20", f"--output_dir={tmp_path / 'out'}",
          "--progress=none"]
  assert cli.main(args) == 0
  out = capsys.readouterr().out
  result = json.load(open(tmp_path / "out" / "audit.json"))
  assert result["epsilon_lower_bound"] <= result["accountant_epsilon"]
  for text in ("accountant epsilon", "empirical epsilon", "tightness", "Steinke"):
    assert text in out


def _config_file(tmp_path, data_root):
  """A config file of the test's small run (the CLI takes files, not ConfigDicts)."""
  path = tmp_path / "small.py"
  path.write_text(
      "from tests.train_test import small_config\n\n\n"
      f"def get_config():\n  return small_config({data_root!r})\n")
  return path
