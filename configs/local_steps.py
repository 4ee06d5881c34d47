"""Local steps vs rounds at a fixed budget of sample-gradient evaluations (quickstart setup).

  python launch/sweep.py --config=configs/local_steps.py --presets=1,5,20,50 \
      --workdir=runs/local_steps

Preset S sets ``fl.local_steps = S`` and ``fl.rounds = 300 // S`` (so every run
spends 10 clients x 300 steps x 64 examples), evaluating about ten times per
run. More local steps mean fewer rounds, hence fewer bytes; ``summary.json``
reports ``rounds_to_target`` and ``bytes_up_to_target``.
"""

from configs import quickstart

TOTAL_LOCAL_STEPS = 300


def get_config(steps: str = "5"):
  s = int(steps)
  if not 1 <= s <= TOTAL_LOCAL_STEPS:
    raise ValueError(f"local steps must be in [1, {TOTAL_LOCAL_STEPS}], got {s}")
  c = quickstart.get_config()
  c.fl.local_steps = s
  c.fl.rounds = TOTAL_LOCAL_STEPS // s
  c.eval.every = max(1, c.fl.rounds // 10)
  c.ckpt.every = max(1, c.fl.rounds // 3)
  c.comm.target_accuracy = 0.8
  return c
