"""End to end: train_and_evaluate on synthetic MedMNIST-shaped files."""

import json
import os

import chex
import jax
import numpy as np
import pytest

from configs import base
from fedjax_med import checkpoint, compression, errors, experiment, metrics, train
from fedjax_med.algorithms import registry


def small_config(data_root, **overrides):
  c = base.get_config()
  c.data.root = data_root
  c.data.download = False
  c.data.verify_md5 = False
  c.model.name = "cnn_tiny"
  c.partition.kind = "dirichlet"
  c.partition.alpha = 1.0
  c.partition.min_size = 5
  c.fl.rounds = 4
  c.fl.num_clients = 6
  c.fl.clients_per_round = 4
  c.fl.local_steps = 3
  c.fl.batch_size = 8
  c.fl.client_lr = 0.1
  c.eval.every = 2
  c.eval.batch_size = 32
  c.ckpt.every = 2
  c.log.progress = "none"
  return base.apply(c, overrides)


def test_outputs_and_learning(data_root, tmp_path):
  config = small_config(data_root, **{"fl.rounds": 8, "fl.local_steps": 4, "eval.every": 4})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.round) == 8
  for name in ("config.json", "metrics.jsonl", "summary.json", "partition.json", "checkpoints"):
    assert os.path.exists(tmp_path / name), name
  assert json.load(open(tmp_path / "config.json"))["fl"]["rounds"] == 8
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  for r in records:
    assert {"round", "split", "loss"} <= set(r)
  evals = [r for r in records if r["split"] in ("val", "test")]
  assert all({"accuracy", "auc"} <= set(r) for r in evals)
  train_losses = [r["loss"] for r in records if r["split"] == "train"]
  assert np.mean(train_losses[-2:]) < train_losses[0]  # loss falls
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["rounds_completed"] == 8
  assert summary["test"]["accuracy"] > 0.75  # balanced binary task: chance is 0.5
  assert summary["test"]["auc"] > 0.8
  assert set(summary["val"]) == {"accuracy", "auc", "loss"}


class Killed(Exception):
  pass


def killed_then_resumed(config, workdir, monkeypatch):
  """Runs ``config`` in ``workdir``, killed during round 4 (after the checkpoint at round
  2): no summary is written; then reruns it there. Returns the resumed final state."""
  real_batch = experiment.Experiment.make_batch

  def dying_batch(self, round_idx, **kw):
    if round_idx == 3:
      raise Killed()
    return real_batch(self, round_idx, **kw)

  monkeypatch.setattr(experiment.Experiment, "make_batch", dying_batch)
  with pytest.raises(Killed):
    train.train_and_evaluate(config, str(workdir))
  assert not os.path.exists(os.path.join(workdir, "summary.json"))
  monkeypatch.setattr(experiment.Experiment, "make_batch", real_batch)
  return train.train_and_evaluate(config, str(workdir))


@pytest.mark.parametrize("algorithm", ["fedavg", "centralized"])
def test_kill_and_resume_equals_uninterrupted(data_root, tmp_path, monkeypatch, algorithm):
  overrides = {"algorithm.name": algorithm}
  if algorithm == "centralized":
    overrides.update({"fl.num_clients": 1, "fl.clients_per_round": 1, "partition.kind": "iid"})
  config = small_config(data_root, **overrides)
  full = train.train_and_evaluate(config, str(tmp_path / "full"))
  resumed = killed_then_resumed(config, tmp_path / "resumed", monkeypatch)

  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))
  log_full = metrics.read_jsonl(str(tmp_path / "full" / "metrics.jsonl"))
  log_resumed = metrics.read_jsonl(str(tmp_path / "resumed" / "metrics.jsonl"))
  # Everything but the wall clock (elapsed_s, on evaluation records) is identical.
  for log in (log_full, log_resumed):
    for r in log:
      if r["split"] in ("val", "test"):
        assert r.pop("elapsed_s") >= 0
  assert log_full == log_resumed


def test_resume_of_finished_run_rewrites_summary(data_root, tmp_path):
  config = small_config(data_root, **{"fl.rounds": 2})
  train.train_and_evaluate(config, str(tmp_path))
  first = json.load(open(tmp_path / "summary.json"))
  os.remove(tmp_path / "summary.json")
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.round) == 2
  assert json.load(open(tmp_path / "summary.json"))["test"] == first["test"]


def test_a_round_where_every_client_fails_changes_nothing_and_the_run_goes_on(
    data_root, tmp_path, monkeypatch, caplog):
  config = small_config(data_root, **{"ckpt.every": 1, "ckpt.keep": 4})
  real_batch = experiment.Experiment.make_batch

  def poisoned(self, round_idx, **kw):
    batch = real_batch(self, round_idx, **kw)
    if round_idx == 2:  # every client's images NaN: every loss and update of round 3 too
      image = batch.image.astype(np.float32)
      image[:] = np.nan
      batch = batch._replace(image=image)
    return batch

  monkeypatch.setattr(experiment.Experiment, "make_batch", poisoned)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.round) == 4 and os.path.exists(tmp_path / "summary.json")
  assert "round 3: every one of the 4 sampled clients dropped out or failed (4 failed" in (
      caplog.text)
  train_lines = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")
                 if '"split": "train"' in x]
  third = train_lines[2]
  assert third["round"] == 3 and third["all_dropped"] and third["failed_clients"] == 4
  assert third["loss"] is None and third["pseudo_grad_norm"] == 0
  # the model after round 3 is the model after round 2
  ckpt = checkpoint.Checkpointer(str(tmp_path / "checkpoints"), max_to_keep=4)
  after2, after3 = ckpt.restore(state, 2), ckpt.restore(state, 3)
  chex.assert_trees_all_equal(after2.params, after3.params)
  assert json.load(open(tmp_path / "summary.json"))["failed_clients"] == 4


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("fl.clients_per_round", 99, "clients_per_round"),
        ("fl.client_lr", -1.0, "client_lr"),
        ("partition.alpha", 0.0, "alpha"),
        ("fl.num_clients", 10_000, "client"),
        ("model.name", "resnet1000", "model.name"),
        ("data.size", 32, "data.size"),
    ],
)
def test_bad_config_is_a_clear_error_before_any_output(data_root, tmp_path, key, value, match):
  config = small_config(data_root, **{key: value})
  with pytest.raises(errors.UserError, match=match):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_missing_data_offline_is_a_clear_error(tmp_path):
  config = small_config(str(tmp_path / "empty"))
  with pytest.raises(errors.DataError, match="pneumoniamnist.npz"):
    train.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in registry.names() if registry.get(n).federated])
def test_every_algorithm_runs_from_config(data_root, tmp_path, name):
  # The registry's server-optimizer defaults (fedadam: lr 0.01, ...) apply.
  overrides = {"algorithm.name": name, "fl.rounds": 2, "eval.every": 2, "ckpt.every": 2}
  if name == "fedbn":
    overrides["model.name"] = "resnet_tiny_bn"
  state = train.train_and_evaluate(small_config(data_root, **overrides), str(tmp_path))
  assert int(state.round) == 2
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["algorithm"] == name and np.isfinite(summary["test"]["loss"])


def test_local_epochs_mode(data_root, tmp_path):
  config = small_config(data_root, **{"fl.local_epochs": 1.0, "fl.rounds": 2,
                                      "partition.kind": "quantity"})
  train.train_and_evaluate(config, str(tmp_path))
  summary = json.load(open(tmp_path / "summary.json"))
  sizes = json.load(open(tmp_path / "partition.json"))["sizes"]
  assert summary["local_steps"] == max(-(-n // min(8, n)) for n in sizes)


@pytest.mark.slow
def test_swa_wraps_any_algorithm_and_resumes(data_root, tmp_path, monkeypatch):
  config = small_config(data_root, **{"algorithm.name": "scaffold", "algorithm.swa": True,
                                      "algorithm.swa_fraction": 0.5})
  full = train.train_and_evaluate(config, str(tmp_path / "a"))
  assert int(full.swa_count) == 2  # rounds 3 and 4 of 4
  resumed = killed_then_resumed(config, tmp_path / "b", monkeypatch)
  chex.assert_trees_all_equal(jax.device_get(full), jax.device_get(resumed))


def test_compression_bytes_accounting(data_root, tmp_path):
  config = small_config(data_root, **{"comm.compressor": "topk", "comm.fraction": 0.1,
                                      "comm.error_feedback": True, "comm.target_accuracy": 0.0})
  state = train.train_and_evaluate(config, str(tmp_path))
  params = jax.device_get(state.params)
  up = config.fl.clients_per_round * compression.upload_bits(compression.topk(0.1), params) // 8
  down = config.fl.clients_per_round * compression.model_bits(params) // 8
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  for r in records:
    assert r["bytes_up"] == r["round"] * up and r["bytes_down"] == r["round"] * down
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["total_bytes_up"] == 4 * up and summary["compressor"] == "topk"
  assert summary["rounds_to_target"] == 2 and summary["bytes_up_to_target"] == 2 * up
  assert up < down / 4  # ~10% of the entries as (value, index) pairs: ~1/5 of the bytes
  assert state.client_state.residual is not None


@pytest.mark.slow
def test_periodic_sharpness_logging(data_root, tmp_path):
  config = small_config(data_root, **{"fl.rounds": 2, "analysis.every": 1,
                                      "analysis.examples": 16, "analysis.batch_size": 8,
                                      "analysis.lanczos_iters": 3, "analysis.probes": 2})
  train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metrics.read_jsonl(str(tmp_path / "metrics.jsonl")) if r["split"] == "analysis"]
  assert [r["round"] for r in rows] == [1, 2]
  assert all(np.isfinite(r["lambda_max"]) for r in rows)
  # lambda_max against 2 / lr at the round's client lr (0.1)
  assert all(r["stability_ratio"] == pytest.approx(r["lambda_max"] * 0.1 / 2) for r in rows)


def test_adamw_with_warmup_and_cosine_logs_the_scheduled_client_lr(data_root, tmp_path):
  config = small_config(data_root, **{
      "fl.client_opt": "adamw", "fl.client_lr": 0.01, "fl.client_weight_decay": 0.05,
      "fl.client_lr_schedule": "cosine", "fl.client_warmup_rounds": 2,
      "fl.client_lr_min_ratio": 0.1})
  train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metrics.read_jsonl(str(tmp_path / "metrics.jsonl")) if r["split"] == "train"]
  # warmup 1/2, 2/2 of 0.01; then cosine from the peak to 0.1 x at the last of 4 rounds
  assert [r["client_lr"] for r in rows] == pytest.approx([0.005, 0.01, 0.0055, 0.001])
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["fl"]["client_opt"] == "adamw" and saved["fl"]["client_momentum"] == 0.0
  summary = json.load(open(tmp_path / "summary.json"))
  assert np.isfinite(summary["test"]["loss"])


def test_site_feature_skew_run(data_root, tmp_path):
  config = small_config(data_root, **{"fl.rounds": 2, "partition.site_shift": 1.0})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.round) == 2
  exp = experiment.build(config)
  plain = experiment.build(small_config(data_root))
  assert not np.array_equal(exp.dataset.train.images, plain.dataset.train.images)
  np.testing.assert_array_equal(exp.dataset.test.images, plain.dataset.test.images)


def test_selection_on_validation_and_per_site_held_out_metrics(data_root, tmp_path):
  config = small_config(data_root, **{"eval.every": 1, "eval.select_on": "balanced_accuracy"})
  train.train_and_evaluate(config, str(tmp_path / "fed"))
  summary = json.load(open(tmp_path / "fed" / "summary.json"))
  records = metrics.read_jsonl(str(tmp_path / "fed" / "metrics.jsonl"))
  val = [r for r in records if r["split"] == "val"]
  test = {r["round"]: r for r in records if r["split"] == "test"}
  assert all({"balanced_accuracy", "recall"} <= set(r) for r in val)
  # The earliest round with the best validation balanced accuracy; its test numbers, not test's best.
  best = max(val, key=lambda r: (r["balanced_accuracy"], -r["round"]))["round"]
  sel = summary["selected"]
  assert sel["metric"] == "balanced_accuracy" and sel["best_val"]["round"] == best
  assert sel["best_val"]["test"]["auc"] == test[best]["auc"]
  assert sel["last3"]["rounds"] == [2, 3, 4]
  assert sel["last3"]["test"]["accuracy"] == pytest.approx(
      np.mean([test[r]["accuracy"] for r in (2, 3, 4)]))
  part = json.load(open(tmp_path / "fed" / "partition.json"))
  held = part["held_out_sizes"]
  sites = summary["sites"]
  assert sites["model"] == "global" and sites["sizes"] == held and len(held) == 6
  for n_train, n_held in zip(part["sizes"], held, strict=True):  # 20 % of each client's data
    n = n_train + n_held
    assert n_held == min(n - 1, max(1, round(0.2 * n)))
  assert len(sites["balanced_accuracy"]["per_site"]) == 6
  assert sites["accuracy"]["worst"] <= sites["accuracy"]["mean"]
  # The centralized counterpart pools the same sites' training shares and is tested on the
  # same held-out shares.
  central = small_config(data_root, **{"algorithm.name": "centralized", "fl.clients_per_round": 1,
                                       "fl.local_steps": 12})
  exp = experiment.build(central)
  fed = experiment.build(config)
  np.testing.assert_array_equal(exp.sites.test.indices, fed.sites.test.indices)
  np.testing.assert_array_equal(np.sort(exp.partition.indices), np.sort(fed.partition.indices))
  assert exp.partition.num_clients == 1


def test_scaffold_counts_its_control_variate_upload_and_logs_diagnostics(data_root, tmp_path):
  config = small_config(data_root, **{"algorithm.name": "scaffold", "fl.rounds": 2})
  state = train.train_and_evaluate(config, str(tmp_path))
  params = jax.device_get(state.params)
  model = compression.model_bits(params) // 8  # float32 model = its delta = its delta c_i
  records = metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
  rows = [r for r in records if r["split"] == "train"]
  assert rows[-1]["bytes_up"] == 2 * config.fl.clients_per_round * 2 * model
  assert all(r["control_norm"] > 0 and r["client_control_drift_max"] > 0 for r in rows)
