"""Analysis tests compile many small programs: XLA's optimizations cost more than they save."""

import jax
import pytest


@pytest.fixture(autouse=True, scope="package")
def _fast_compile():
  old = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
