"""Personalization end to end: the personal layers a config names, per-site results of the
personal and the global model, sites never sampled, fine-tuning before the test."""

import json

import jax
import numpy as np
import optax
import pytest

from fedjax_med import batching, errors, evaluation, experiment, finetune, models, tasks, train
from fedjax_med.algorithms import client_store, local, personal
from tests.train_test import small_config


@pytest.mark.parametrize("name", models.names())
def test_head_pattern_is_the_classifier_of_every_model(name):
  model = models.get_model(name, 7)
  shape = (28,) * models.spatial_dims(name) + (1,)  # 28 px images; 28^3 volumes for 3D models
  variables = jax.eval_shape(lambda: tasks.init_variables(model, jax.random.PRNGKey(0), shape))
  is_head = personal.matcher(models.head_pattern(name))
  chosen = {personal.path_name(p): leaf.shape
            for p, leaf in jax.tree_util.tree_flatten_with_path(variables)[0] if is_head(p)}
  assert sorted(k.rsplit("/", 1)[1] for k in chosen) == ["bias", "kernel"]
  kernel = next(shape for k, shape in chosen.items() if k.endswith("kernel"))
  bias = next(shape for k, shape in chosen.items() if k.endswith("bias"))
  assert bias == (7,) and len(kernel) == 2 and kernel[1] == 7
  assert all(k.count("/") == 2 for k in chosen)  # params/<layer>/<leaf>: the top-level classifier


def test_matcher_searches_the_joined_path():
  params = {"params": {"Dense_0": {"kernel": 1}, "Dense_1": {"kernel": 2}}, "batch_stats": {}}
  mask = personal.leaf_mask(params, personal.matcher("Dense_1/"))
  assert mask == {"params": {"Dense_0": {"kernel": False}, "Dense_1": {"kernel": True}},
                  "batch_stats": {}}
  with pytest.raises(ValueError, match="regular expression"):
    personal.matcher("(")


@pytest.mark.parametrize("overrides, match", [
    ({"personal.layers": "Dense_1"}, "fedavg keeps no layers per client"),
    ({"algorithm.name": "fedper", "personal.layers": "("}, "not a regular expression"),
    ({"algorithm.name": "fedper", "personal.layers": "nothing_matches"}, "no personal layers"),
    ({"personal.finetune_steps": 2, "eval.site_holdout": 0.0}, "site_holdout"),
    ({"personal.finetune_steps": -1}, "finetune_steps"),
    ({"personal.finetune_lr": -0.1}, "finetune_lr"),
    ({"algorithm.name": "apfl", "algorithm.apfl.alpha": 2.0}, "apfl.alpha"),
    ({"algorithm.name": "fedrep", "algorithm.fedrep.head_fraction": 1.5}, "head_fraction"),
    # S=3: 0.1 gives 0 head steps (only 0 and 1 may train one group alone)
    ({"algorithm.name": "fedrep", "algorithm.fedrep.head_fraction": 0.1}, "head steps"),
    ({"personal.finetune_steps": True}, "finetune_steps"),
    ({"personal.finetune_steps": 10**7}, "finetune_steps"),
])
def test_bad_personalization_config_is_a_clear_error(data_root, overrides, match):
  with pytest.raises(errors.ConfigError, match=match):
    experiment.build(small_config(data_root, **overrides))


def test_summarize_sites_counts_only_the_included_sites():
  per_site = [{"accuracy": a, "balanced_accuracy": a, "auc": a} for a in (0.9, 0.5, 0.7)]
  out = evaluation.summarize_sites(per_site, np.array([True, False, True]))
  assert out["accuracy"]["mean"] == pytest.approx(0.8) and out["accuracy"]["worst"] == 0.7
  assert out["accuracy"]["per_site"] == [0.9, 0.5, 0.7]  # every site listed


def test_participants_are_the_sampled_sites_that_did_not_drop_out(data_root):
  exp = experiment.build(small_config(data_root, **{"fl.clients_per_round": 2,
                                                    "fl.dropout_rate": 0.3}))
  expected = np.zeros(6, bool)
  for r in range(3):
    ids = batching.sample_clients(6, 2, 0, r)
    dropped = batching.dropout_mask(ids, 0.3, 0, r)
    expected[ids[~dropped]] = True
  np.testing.assert_array_equal(exp.participants(3), expected)
  assert not exp.participants(0).any()


def test_personal_run_reports_own_global_finetuned_and_never_sampled_sites(data_root, tmp_path):
  config = small_config(data_root, **{"algorithm.name": "fedper", "fl.rounds": 1,
                                      "fl.clients_per_round": 2, "eval.every": 1,
                                      "personal.finetune_steps": 3})
  state = train.train_and_evaluate(config, str(tmp_path))
  summary = json.load(open(tmp_path / "summary.json"))
  sampled = batching.sample_clients(6, 2, 0, 0)
  never = sorted(set(range(6)) - set(sampled.tolist()))
  exp = experiment.build(config)
  for key in ("sites", "sites_global", "sites_finetuned"):
    assert summary[key]["never_sampled"]["sites"] == never
  assert summary["sites"]["model"] == "each site's own"
  assert summary["sites_global"]["model"] == "global"
  assert "fine-tuned 3 steps" in summary["sites_finetuned"]["model"]
  # every site's personal head: N x (hidden x K + K) float32
  head = sum(int(np.prod(x.shape[1:])) for x in jax.tree.leaves(state.client_state.algorithm))
  assert summary["client_store_bytes"] == client_store.nbytes(state.client_state) == 6 * head * 4
  # A sampled site is tested with its own head, a never-sampled one with the global model.
  own = exp.algorithm.client_params
  site = int(sampled[0])
  assert not np.allclose(own(state, site)["params"]["Dense_1"]["kernel"],
                         state.params["params"]["Dense_1"]["kernel"])
  g = summary["sites_global"]["accuracy"]["per_site"]
  p = summary["sites"]["accuracy"]["per_site"]
  assert all(g[c] == p[c] for c in never)
  # ... and the sampled site's reported numbers are those of its own model on its share
  idx = exp.sites.test.client(site)
  train_split = exp.dataset.train
  probs = evaluation.predict_probs(exp.evaluator.eval_fn, own(jax.device_get(state), site),
                                   train_split.images[idx], 32)
  mine = evaluation.class_metrics(probs, train_split.labels[idx])
  assert p[site] == pytest.approx(mine["accuracy"], abs=1e-5)
  glob = evaluation.class_metrics(evaluation.predict_probs(
      exp.evaluator.eval_fn, state.params, train_split.images[idx], 32), train_split.labels[idx])
  assert g[site] == pytest.approx(glob["accuracy"], abs=1e-5)


def test_finetuning_is_seeded_local_training_on_the_site_share(data_root):
  exp = experiment.build(small_config(data_root, **{"personal.finetune_steps": 4,
                                                    "personal.finetune_lr": 0.2}))
  params = exp.initial_state().params
  tune = finetune.make_finetune_fn(exp, rounds=4)
  once, again = tune(params, 1), tune(params, 1)
  jax.tree.map(np.testing.assert_array_equal, once, again)  # deterministic
  # what it is: 4 SGD steps at lr 0.2 on site 1's training share (batches of round 4)
  batch = batching.make_client_batch(exp.dataset.train.images, exp.dataset.train.labels,
                                     exp.sites.train, np.array([1]), local_steps=4, batch_size=8,
                                     seed=0, round_idx=4)
  data = {"image": batch.image[0], "label": batch.label[0], "mask": batch.mask[0]}
  key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), finetune.FINETUNE_STREAM), 1)
  ref = local.local_train(exp.loss_fn, optax.sgd(0.2), params, data, key).params
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), once, ref)
  moved = max(float(np.abs(a - b).max())
              for a, b in zip(jax.tree.leaves(once), jax.tree.leaves(params), strict=True))
  assert moved > 1e-4
