"""The persistent compilation cache (``config.compile_cache``): where it goes, and that a
second run of the same config loads its compiled programs instead of compiling them."""

import json
import os

import jax
import jax.numpy as jnp
import pytest

from fedjax_med import compile_cache, train
from tests import testing


@pytest.fixture
def restore_cache():
  yield
  compile_cache.setup("auto")  # back to the session's cache (tests/conftest.py)


def test_resolve(monkeypatch, tmp_path):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
  assert compile_cache.resolve("auto") == str(tmp_path / "mine")
  monkeypatch.delenv(compile_cache.ENV)
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))
  assert compile_cache.resolve("auto") == str(tmp_path / "jax")
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert compile_cache.resolve("auto") == str(tmp_path / "xdg" / "fedjax_med" / "xla")
  assert compile_cache.resolve("") is None and compile_cache.resolve("None") is None
  assert compile_cache.resolve(str(tmp_path / "x")) == str(tmp_path / "x")


def test_a_new_folder_is_used_and_counted(tmp_path, restore_cache):
  folder = str(tmp_path / "cache")
  assert compile_cache.setup(folder) == folder and os.path.isdir(folder)
  f = lambda x: jnp.sin(x) @ x.T  # noqa: E731
  x = jnp.ones((64, 64))
  before = compile_cache.CacheStats.snapshot()
  jax.jit(f)(x).block_until_ready()
  assert compile_cache.CacheStats.since(before) == {"hits": 0, "written": 1}
  assert os.listdir(folder)
  jax.clear_caches()  # forget the in-memory executables: the next compile asks the folder
  before = compile_cache.CacheStats.snapshot()
  jax.jit(f)(x).block_until_ready()
  assert compile_cache.CacheStats.since(before) == {"hits": 1, "written": 0}
  assert compile_cache.setup("none") is None and jax.config.jax_compilation_cache_dir is None


def test_an_unwritable_folder_turns_the_cache_off(tmp_path, restore_cache):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  assert compile_cache.setup(str(blocker / "cache")) is None
  assert jax.config.jax_compilation_cache_dir is None


def test_a_rerun_loads_the_compiled_round(tmp_path, restore_cache):
  config = testing.tiny_run_config(tmp_path, **{"compile_cache": str(tmp_path / "cache")})
  train.train_and_evaluate(config, str(tmp_path / "cold"))
  jax.clear_caches()
  train.train_and_evaluate(config, str(tmp_path / "warm"))
  cold, warm = (json.loads((tmp_path / run / "summary.json").read_text())["compile"]
                for run in ("cold", "warm"))
  assert cold["cache_dir"] == str(tmp_path / "cache")
  assert cold["written"] >= 1 and cold["hits"] == 0
  assert warm["hits"] >= 1 and warm["written"] == 0
  # The folder may change between runs of one workdir (not part of the run's identity).
  other = testing.tiny_run_config(tmp_path, **{"compile_cache": "none"})
  train.train_and_evaluate(other, str(tmp_path / "warm"))
