"""Local steps vs rounds at a fixed budget of sample-gradient evaluations (quickstart setup).

  python launch/main.py --config=configs/local_steps.py:20 --workdir=runs/local_steps_20
  python launch/sweep.py --study=configs/studies/local_step_presets.py:cpu  # S in 1, 5, 20, 50

Preset S sets ``fl.local_steps = S`` and ``fl.rounds = 300 // S`` (so every run
spends 10 clients x 300 steps x 64 examples), evaluating about ten times per
run. More local steps mean fewer rounds, hence fewer bytes; ``summary.json``
reports ``rounds_to_target`` and ``bytes_up_to_target``.
"""

from fedjax_med.configs import base, quickstart

TOTAL_LOCAL_STEPS = 300


def overrides(steps: int) -> dict:
  """What preset ``steps`` changes in the quickstart config (also the study's axis labels)."""
  if not 1 <= steps <= TOTAL_LOCAL_STEPS:
    raise ValueError(f"local steps must be in [1, {TOTAL_LOCAL_STEPS}], got {steps}")
  rounds = TOTAL_LOCAL_STEPS // steps
  return {"fl.local_steps": steps, "fl.rounds": rounds, "eval.every": max(1, rounds // 10),
          "ckpt.every": max(1, rounds // 3)}


def get_config(steps: str = "5"):
  c = quickstart.get_config()
  c.comm.target_accuracy = 0.8
  return base.apply(c, overrides(int(steps)))
