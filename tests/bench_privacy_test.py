"""Smoke test of bench/privacy_speed.py at tiny sizes, and that its hand-written DP-SGD
gradients are the library's (the ladder and the contracted variant time the same maths)."""

import json
import math

import jax
import numpy as np
import pytest

from bench import privacy_speed, workload
from fedjax_med import batching
from fedjax_med.algorithms import local
from fedjax_med.privacy import dp_sgd
from fedjax_med.privacy import plan as privacy_plan
from tests.testing import unoptimized_compiles


def _step_inputs(model="cnn_tiny", batch=4, real=3):
  """A tiny model's loss, params and one step's batch with ``batch - real`` padding slots."""
  setup = workload.Setup(model, "auto", 1)
  data = local.client_data(workload.make_round_batch(1, 1, batch))
  step = jax.tree.map(lambda x: np.asarray(x[0, 0]), data)
  step["mask"] = np.arange(batch) < real
  return setup.loss_fn, setup.params, step


def _close(got, want):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, want)


@pytest.mark.parametrize("clip_norm", [1e-3, 1e3])  # every example clipped / none
def test_hand_written_gradients_are_dp_sgds(clip_norm):
  loss_fn, params, step = _step_inputs()
  dp = dp_sgd.RecordDP(clip_norm, 1.0, 4)
  quiet = dp._replace(noise_multiplier=0.0)
  unclipped = quiet._replace(clip_norm=math.inf)
  cases = {  # name -> (the bench's tail, mechanism): each must equal dp_sgd at that mechanism
    "clip_sum_noise": (privacy_speed.clip_sum_noise, dp),
    "clip_sum_noise_contracted": (privacy_speed.clip_sum_noise_contracted, dp),
    "clipped": (privacy_speed.clipped, quiet),  # DP-SGD at noise 0
    "summed": (privacy_speed.summed, unclipped),  # and without clipping
    "summed_contracted": (privacy_speed.summed_contracted, unclipped),
  }

  @jax.jit
  def both(key):
    return {name: (privacy_speed.grad_fn(loss_fn, tail, mech)(params, step, key),
                   dp_sgd.grad_fn(loss_fn, mech)(params, step, key))
            for name, (tail, mech) in cases.items()}

  with unoptimized_compiles():
    out = both(jax.random.key(3))
  for name, (((loss, _), grads), ((want_loss, _), want)) in out.items():
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6, err_msg=name)
    _close(grads, want)
  if clip_norm < 1:  # the clip bites: the unclipped sum is another gradient
    got, clipped = out["summed"][0][1], out["clipped"][0][1]
    assert any(not np.allclose(a, b) for a, b in
               zip(jax.tree.leaves(got), jax.tree.leaves(clipped), strict=True))


def test_capacity_is_the_trainers():
  assert privacy_speed.OVERFLOW_PROBABILITY == privacy_plan.OVERFLOW_PROBABILITY
  tail = privacy_plan.OVERFLOW_PROBABILITY / (30 * 5 * 10)  # privacy_plan._tail(rounds*S*N)
  assert privacy_speed.capacity(32, 470, 30, 5, 10) == batching.poisson_capacity(32, 470, tail)
  assert privacy_speed.capacity(32, 20, 30, 5, 10) == 20  # q = 1: every record, every step


@pytest.mark.slow
def test_quick_run_prints_finite_ratios_last(capsys):
  with unoptimized_compiles():  # compile time dominates at this size; no figure is checked
    out = privacy_speed.main(["--quick"])
  line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert line == json.loads(json.dumps(out))
  names = [n for n in privacy_speed.ROUNDS if n != "plain"]
  ratios = [f"{n}_vs_plain" for n in names]
  ratios += [f"{n}_vs_grad" for n in privacy_speed.GRADS if n != "grad"]
  for key in ratios:
    assert math.isfinite(line[key]) and line[key] > 0, key
  assert set(line["breakdown_in_plain_rounds"]) == {"per_example_grads", "clipping", "noise"}
  assert all(math.isfinite(v) for v in line["breakdown_in_plain_rounds"].values())
  assert set(line["seconds"]) == set(privacy_speed.ROUNDS + privacy_speed.GRADS)
  assert all(s > 0 for s in line["seconds"].values())
  assert line["model"] == "cnn_tiny" and line["capacity"] > line["batch"]
  for key in ("backend", "device_count", "jax_version"):
    assert key in line, key

