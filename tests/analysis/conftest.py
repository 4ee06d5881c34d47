"""Analysis tests compile many small programs: XLA's optimizations cost more than they save."""

import pytest

from tests.testing import unoptimized_compiles


@pytest.fixture(autouse=True, scope="package")
def _fast_compile():
  with unoptimized_compiles():
    yield
