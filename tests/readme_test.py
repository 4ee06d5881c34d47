"""The README's code examples run as written."""

import os
import re

import jax
import numpy as np

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_block_after(marker: str) -> str:
  """The first ```python block of README.md after the line containing ``marker``."""
  with open(README) as f:
    text = f.read()
  start = text.index(marker)
  return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_custom_model_example_keeps_the_make_loss_fn_contract():
  scope = {}
  exec(compile(python_block_after("A custom module that satisfies it"), "README.md", "exec"), scope)
  state, metrics, variables = scope["state"], scope["metrics"], scope["variables"]
  assert int(state.round) == 1 and scope["logits"].shape == (8, 2)
  assert np.all(np.isfinite(np.asarray(metrics.client_loss)))
  # The BatchNorm statistics were updated in training and averaged into the server model.
  before = variables["batch_stats"]["BatchNorm_0"]["mean"]
  after = jax.device_get(state.params["batch_stats"]["BatchNorm_0"]["mean"])
  assert not np.allclose(before, after)
