"""Simulated client dropout and stragglers, and the dropped-client log (issue 16, part 2).

``fl.dropout_rate``: each sampled client independently fails to report (weight 0, no
data, its id kept); ``fl.straggler_fraction`` of the sampled clients run only
``fl.straggler_steps`` local steps. Both are seeded by (seed, round, client id) on the
host; the trainer logs ``dropped_clients`` per round and in summary.json.
"""

import json

import chex
import jax
import numpy as np
import pytest

from fedjax_med import batching, errors, experiment, metrics, train, types
from tests import train_test


def small_config(data_root, **overrides):
  """train_test's tiny run with IID clients and one evaluation / checkpoint at round 4."""
  return train_test.small_config(data_root, **{
      "partition.kind": "iid", "eval.every": 4, "ckpt.every": 4, **overrides})


def test_dropout_frequency_matches_the_rate_and_is_independent():
  rate, rounds, ids = 0.3, 400, np.arange(50)
  draws = np.stack([batching.dropout_mask(ids, rate, 7, r) for r in range(rounds)])  # [R, N]
  n = draws.size
  assert abs(draws.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / n)  # ~0.009
  per_client = draws.mean(axis=0)  # every client drops out at the rate, not a fixed few
  assert np.all(np.abs(per_client - rate) < 5 * np.sqrt(rate * (1 - rate) / rounds))
  # independent across rounds and clients: no correlation beyond noise
  lag = np.corrcoef(draws[:-1].ravel(), draws[1:].ravel())[0, 1]
  assert abs(lag) < 4 / np.sqrt(n)
  # a pure function of (seed, round, id): not of the other clients or their order
  np.testing.assert_array_equal(batching.dropout_mask(ids[::-1], rate, 7, 3), draws[3][::-1])
  np.testing.assert_array_equal(batching.dropout_mask(ids[:5], rate, 7, 3), draws[3][:5])
  assert not np.array_equal(batching.dropout_mask(ids, rate, 8, 3), draws[3])
  assert not batching.dropout_mask(np.array([-1, -1]), 0.99, 7, 0).any()  # padding never
  assert not batching.dropout_mask(ids, 0.0, 7, 0).any()


def test_straggler_mask_takes_the_stated_fraction_of_real_clients():
  ids = np.array([3, 9, 1, 4, -1, -1])
  for fraction, count in ((0.0, 0), (0.25, 1), (0.5, 2), (0.6, 2), (1.0, 4)):
    masks = [batching.straggler_mask(ids, fraction, 0, r) for r in range(20)]
    assert all(m.sum() == count and not m[4:].any() for m in masks)
  m = batching.straggler_mask(ids, 0.5, 0, 5)
  np.testing.assert_array_equal(batching.straggler_mask(ids[::-1], 0.5, 0, 5), m[::-1])
  chosen = {tuple(batching.straggler_mask(ids, 0.5, 0, r)) for r in range(20)}
  assert len(chosen) > 1  # a different choice from round to round


def test_zero_rates_give_exactly_the_plain_batches(data_root):
  exp = experiment.build(small_config(data_root))
  assert exp.config.fl.dropout_rate == 0 and exp.config.fl.straggler_fraction == 0
  for r in range(3):
    got = exp.make_batch(r, pad_clients_to=8)
    ids = batching.sample_clients(6, 4, exp.config.seed, r)
    want = batching.make_client_batch(
        exp.dataset.train.images, exp.dataset.train.labels, exp.partition, ids, local_steps=3,
        batch_size=8, seed=exp.config.seed, round_idx=r, pad_clients_to=8)
    chex.assert_trees_all_equal(got, want)
  batch = exp.make_batch(0, pad_clients_to=4)
  none = np.zeros(4, bool)
  assert batching.simulate_failures(batch, none, none, 1) is batch


def test_dropped_out_and_straggling_clients_in_the_round_compile_once(data_root):
  exp = experiment.build(small_config(data_root, **{
      "fl.dropout_rate": 0.4, "fl.straggler_fraction": 0.5, "fl.straggler_steps": 1}))
  round_fn = jax.jit(chex.assert_max_traces(n=1)(exp.algorithm.round))
  state = exp.initial_state()
  seen_out = seen_straggler = 0
  for r in range(4):
    batch = exp.make_batch(r, pad_clients_to=4)
    out, stragglers = exp.failures(r, batch.client_id)
    assert not (out & stragglers).any()
    np.testing.assert_array_equal(batch.weight == 0, out)  # every sampled client has data
    assert np.all(batch.client_id >= 0)  # a dropped-out client keeps its id
    assert not batch.mask[out].any()
    state, m = round_fn(state, batch)
    steps = np.asarray(m.client_steps)
    np.testing.assert_array_equal(steps, np.where(out, 0, np.where(stragglers, 1, 3)))
    assert not np.asarray(m.dropped).any()  # dropout is not a failure of the round
    seen_out += out.sum()
    seen_straggler += stragglers.sum()
  assert seen_out > 0 and seen_straggler > 0  # the seeds exercise both paths
  chex.clear_trace_counter()


def test_trainer_logs_dropped_and_failed_clients_and_goes_on(data_root, tmp_path, monkeypatch):
  """Round 2: one client's images are NaN (failed); round 3: every client drops out."""
  config = small_config(data_root, **{"fl.dropout_rate": 0.3, "fl.straggler_fraction": 0.25,
                                      "fl.straggler_steps": 2})
  real_batch, real_failures = experiment.Experiment.make_batch, experiment.Experiment.failures

  def failures(self, round_idx, client_ids):
    out, stragglers = real_failures(self, round_idx, client_ids)
    if round_idx == 2:
      out = np.asarray(client_ids) >= 0
    return out, stragglers & ~out

  def make_batch(self, round_idx, **kw):
    batch = real_batch(self, round_idx, **kw)
    if round_idx == 1:
      first = int(np.flatnonzero(batch.weight > 0)[0])
      image = batch.image.astype(np.float32)
      image[first] = np.nan
      batch = batch._replace(image=image)
    return batch

  monkeypatch.setattr(experiment.Experiment, "failures", failures)
  monkeypatch.setattr(experiment.Experiment, "make_batch", make_batch)
  exp = experiment.build(config)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.round) == 4
  records = [r for r in metrics.read_jsonl(str(tmp_path / "metrics.jsonl"))
             if r["split"] == "train"]
  ids = [batching.sample_clients(6, 4, config.seed, r) for r in range(4)]
  expected_out = [int(failures(exp, r, ids[r])[0].sum()) for r in range(4)]
  assert expected_out[2] == 4
  assert [r["failed_clients"] for r in records] == [0, 1, 0, 0]
  assert [r["dropped_clients"] for r in records] == [
      n + f for n, f in zip(expected_out, [0, 1, 0, 0], strict=True)]
  assert [bool(r.get("all_dropped")) for r in records] == [False, False, True, False]
  assert records[2]["loss"] is None and all(np.isfinite(r["loss"]) for r in records[:2])
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["dropped_clients"] == sum(r["dropped_clients"] for r in records)
  assert summary["failed_clients"] == 1 and summary["all_dropped_rounds"] == 1
  assert np.isfinite(summary["test"]["loss"])


@pytest.mark.parametrize("overrides,match", [
    ({"fl.dropout_rate": 1.0}, "fl.dropout_rate"),
    ({"fl.dropout_rate": -0.1}, "fl.dropout_rate"),
    ({"fl.straggler_fraction": 1.5}, "fl.straggler_fraction"),
    ({"fl.straggler_fraction": 0.5, "fl.straggler_steps": 3}, "fl.straggler_steps"),
    ({"fl.straggler_fraction": 0.5, "fl.straggler_steps": 0}, "fl.straggler_steps"),
    ({"algorithm.name": "centralized", "fl.num_clients": 1, "fl.clients_per_round": 1,
      "fl.dropout_rate": 0.2}, "fl.dropout_rate"),
    ({"privacy.level": "record", "privacy.noise_multiplier": 1.0, "fl.straggler_fraction": 0.5},
     "fl.straggler_fraction"),
])
def test_bad_dropout_config_is_one_clear_error(data_root, overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    experiment.build(small_config(data_root, **overrides))


def test_train_loss_counts_only_the_clients_that_reported():
  """[3 real clients + 1 padding] x S=2: client 0 normal, 1 dropped out, 2 failed (NaN)."""
  m = types.RoundMetrics(
      client_loss=np.array([[1.0, 3.0], [0.0, 0.0], [np.nan, np.nan], [0.0, 0.0]]),
      client_steps=np.array([2, 0, 2, 0]), update_norm=np.zeros(4), pseudo_grad_norm=0.0,
      dropped=np.array([False, False, True, False]))
  batch = types.ClientBatch(None, None, None, np.array([5.0, 0.0, 5.0, 0.0]),
                            np.array([0, 1, 2, -1]))

  class Exp:
    def failures(self, round_idx, ids):
      return np.asarray(ids) == 1, np.zeros(len(ids), bool)

  drops = train._drops(Exp(), 0, batch, m)
  assert (drops["dropped_clients"], drops["failed_clients"], drops["all_dropped"]) == (2, 1, False)
  assert train._mean_loss(m, drops) == 2.0  # client 0 alone: (1 + 3) / 2
  # every client that reported failed: no loss (the round changed nothing; the run goes on)
  m2 = m._replace(dropped=np.array([True, False, True, False]))
  d2 = train._drops(Exp(), 0, batch, m2)
  assert d2["all_dropped"] and train._mean_loss(m2, d2) is None
  # every sampled client dropped out: no loss, and the record says so
  m3 = m._replace(client_steps=np.zeros(4, int), client_loss=np.zeros((4, 2)),
                  dropped=np.zeros(4, bool))

  class AllOut(Exp):
    def failures(self, round_idx, ids):
      return np.asarray(ids) >= 0, np.zeros(len(ids), bool)

  d3 = train._drops(AllOut(), 0, batch, m3)
  assert d3["all_dropped"] and d3["dropped_clients"] == 3
  assert train._mean_loss(m3, d3) is None
