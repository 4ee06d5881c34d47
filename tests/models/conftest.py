"""Model tests compile many small graphs: skip most XLA optimizations (as flax's train_test)."""

import pytest

from tests.testing import unoptimized_compiles


@pytest.fixture(autouse=True)
def _fast_compile():
  with unoptimized_compiles():
    yield
