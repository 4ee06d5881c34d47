"""Model tests compile many small graphs: skip most XLA optimizations (as flax's train_test)."""

import jax
import pytest


@pytest.fixture(autouse=True)
def _fast_compile():
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
