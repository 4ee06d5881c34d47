"""Test setup: 8 fake CPU devices (for sharding tests) and a session-wide compilation cache,
both before jax is imported; the ``data_root`` fixture of the end-to-end tests."""

import atexit
import os
import shutil
import tempfile

import pytest

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The end-to-end tests (and the CLI subprocesses, which inherit the environment) build
# the same rounds and evaluations again and again; a persistent XLA cache for this session
# compiles each program once (the fast subset takes about half the time). Trace counts, which
# the compile-once tests assert, are unaffected; the folder is removed at exit.
_CACHE = tempfile.mkdtemp(prefix="fedjax_med-xla-cache-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
  """A folder with a small synthetic ``pneumoniamnist.npz`` (240 / 60 / 60), read-only for tests."""
  from fedjax_med.data import synthetic

  root = tmp_path_factory.mktemp("medmnist")
  synthetic.write_npz(root / "pneumoniamnist.npz", name="pneumoniamnist", n_train=240, n_val=60,
                      n_test=60, noise=0.6, seed=0)
  return str(root)
