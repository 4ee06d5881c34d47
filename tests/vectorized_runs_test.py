"""Many runs in one jit (``runs.seeds``): run r of a vectorized batch is the single run of its
seed (to float tolerance), each writes its own workdir, and a killed batch resumes exactly."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from fedjax_med import checkpoint, errors, experiment, metrics, train
from tests import train_test

SEEDS = 3
# vmapping the round over runs adds a batch dimension to every matmul and convolution: XLA
# may sum in another order. Measured: params equal to ~1e-7, logged metrics to ~1e-6.
RTOL, ATOL = 1e-5, 1e-6


def _log(workdir) -> list[dict]:
  records = metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))
  for r in records:
    r.pop("elapsed_s", None)
  return records


def _assert_logs_close(a: list[dict], b: list[dict]) -> None:
  assert [(r["round"], r["split"]) for r in a] == [(r["round"], r["split"]) for r in b]
  for x, y in zip(a, b, strict=True):
    assert x.keys() == y.keys()
    for k in x:
      if isinstance(x[k], float):
        np.testing.assert_allclose(x[k], y[k], rtol=RTOL, atol=ATOL, err_msg=k)
      elif not isinstance(x[k], (dict, list)):
        assert x[k] == y[k], k


def _summary(workdir) -> dict:
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])
def test_each_vectorized_run_equals_its_single_run(data_root, tmp_path, algorithm):
  config = train_test.small_config(data_root, **{"algorithm.name": algorithm, "seed": 5,
                                                 "runs.seeds": SEEDS})
  states = []
  for r in range(SEEDS):  # the single runs, one after another
    single = train.run_config(config, 5 + r)
    states.append(jax.device_get(train.train_and_evaluate(single, str(tmp_path / f"s{r}"))))
  last = train.train_and_evaluate(config, str(tmp_path / "vec"))
  chex.assert_trees_all_close(jax.device_get(last), states[-1], rtol=RTOL, atol=ATOL)

  assert sorted(os.listdir(tmp_path / "vec")) == [f"seed_{5 + r}" for r in range(SEEDS)]
  for r in range(SEEDS):
    run, single = tmp_path / "vec" / f"seed_{5 + r}", tmp_path / f"s{r}"
    assert sorted(os.listdir(run)) == sorted(os.listdir(single))
    # config.json: exactly the single run's (seed 5 + r, runs.seeds 1)
    with open(run / "config.json") as f, open(single / "config.json") as g:
      assert json.load(f) == json.load(g)
    _assert_logs_close(_log(run), _log(single))
    vec_summary, one = _summary(run), _summary(single)
    assert vec_summary["vectorized_runs"] == SEEDS and one["vectorized_runs"] == 1
    for key in ("heterogeneity", "rounds_completed", "total_bytes_up", "client_store_bytes"):
      assert vec_summary[key] == one[key], key
    np.testing.assert_allclose(vec_summary["test"]["auc"], one["test"]["auc"], atol=ATOL)
    # Each run's checkpoint is a single run's checkpoint of that seed.
    template = experiment.build(train.run_config(config, 5 + r)).initial_state()
    restored = checkpoint.Checkpointer(str(run / "checkpoints")).restore(template)
    chex.assert_trees_all_close(jax.device_get(restored), states[r], rtol=RTOL, atol=ATOL)
  # The seeds really differ: their partitions and results are not the same.
  assert _summary(tmp_path / "vec" / "seed_5")["heterogeneity"] != _summary(
      tmp_path / "vec" / "seed_6")["heterogeneity"]


def test_a_killed_batch_resumes_exactly(data_root, tmp_path, monkeypatch):
  config = train_test.small_config(data_root, **{"runs.seeds": 2})
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  resumed = train_test.killed_then_resumed(config, tmp_path / "resumed", monkeypatch)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  for seed in ("seed_0", "seed_1"):
    assert _log(tmp_path / "full" / seed) == _log(tmp_path / "resumed" / seed)


@pytest.mark.parametrize("torn", [False, True])
def test_runs_a_kill_left_at_different_rounds_resume_from_the_older(data_root, tmp_path, torn):
  """Runs of a batch are saved one after another: a kill between two saves leaves run 0 a
  checkpoint ahead (``torn``: its step 4 written but not its checksum, a kill inside its
  save). The batch resumes from the round both have and ends as uninterrupted."""
  config = train_test.small_config(data_root, **{"runs.seeds": 2})
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  work = tmp_path / "cut"
  train.train_and_evaluate(config, str(work))
  ckpt = checkpoint.Checkpointer(str(work / "seed_1" / "checkpoints"))
  assert ckpt.latest_round() == 4
  ckpt._discard(4)
  if torn:
    sums_path = work / "seed_0" / "checkpoints" / checkpoint.CHECKSUMS
    sums = json.loads(sums_path.read_text())
    del sums["4"]
    sums_path.write_text(json.dumps(sums))
  os.remove(work / "seed_1" / "summary.json")
  os.remove(work / "seed_0" / "summary.json")
  for _ in range(2):  # resumed, then resumed once more: nothing left behind to trip over
    resumed = train.train_and_evaluate(config, str(work))
    chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
    for seed in ("seed_0", "seed_1"):
      assert _log(tmp_path / "full" / seed) == _log(work / seed)
      assert _summary(work / seed)["rounds_completed"] == 4
      ckpt = checkpoint.Checkpointer(str(work / seed / "checkpoints"))
      assert ckpt.complete_steps() == [2, 4]


@pytest.mark.parametrize("overrides,match", [
    ({"runs.seeds": 0}, "runs.seeds"),
    ({"runs.seeds": 2, "attack.kind": "sign_flip", "attack.fraction": 0.2},
     "malicious clients are chosen per seed"),
    ({"runs.seeds": 2, "privacy.level": "record", "privacy.noise_multiplier": 1.0},
     "noise calibration"),
])
def test_refused(data_root, tmp_path, overrides, match):
  config = train_test.small_config(data_root, **overrides)
  with pytest.raises(errors.ConfigError, match=match):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "seed_0" / "config.json")


def test_a_diverged_run_stops_and_the_others_finish(data_root, tmp_path, monkeypatch):
  """Seed 1's model turns non-finite in round 3 (simulated at the check): it is not
  evaluated or saved from then on, seed 0 finishes, and the batch ends with the error."""
  config = train_test.small_config(data_root, **{"runs.seeds": 2})
  real = train._log_round

  def log_round(run, r, host_batch, m, finite, diag):
    return real(run, r, host_batch, m, finite and not (run.exp.config.seed == 1 and r == 2),
                diag)

  monkeypatch.setattr(train, "_log_round", log_round)
  with pytest.raises(errors.NonFiniteLossError, match=r"\[seed 1\] non-finite .* round 3"):
    train.train_and_evaluate(config, str(tmp_path))
  assert os.path.exists(tmp_path / "seed_0" / "summary.json")
  assert not os.path.exists(tmp_path / "seed_1" / "summary.json")
  assert checkpoint.Checkpointer(str(tmp_path / "seed_1" / "checkpoints")).latest_round() == 2
  assert max(r["round"] for r in _log(tmp_path / "seed_1")) == 2
