"""JAX's persistent compilation cache for runs: compile each round shape once per machine.

A quickstart-sized run spends 9-12 s compiling its first round and its evaluation
on two CPU cores; the runs of a sweep (and a rerun of a config) compile the same
programs again. ``setup(config.compile_cache)`` points JAX's persistent cache
(``jax_compilation_cache_dir``) at a folder, so the second run with the same
shapes loads the compiled executables from disk:

- ``"auto"`` (default): ``$FEDJAX_MED_COMPILE_CACHE``, else
  ``$JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/fedjax_med/xla`` (``~/.cache``
  when unset);
- a path: that folder (created);
- ``""`` or ``"none"``: off (every run compiles).

Executables are keyed by JAX on the program, the compile options, the jax/jaxlib
version and the devices, so a stale entry is never used; the folder can be
deleted at any time. ``CacheStats`` counts the compiles the cache served (hits)
and the ones it stored after compiling them (written; programs that compile in
under ``MIN_COMPILE_SECS`` are neither), from JAX's monitoring events, so a run
logs and records whether its compiles were cold or warm.
"""

from __future__ import annotations

import logging
import os
import threading

import jax
from jax import monitoring

log = logging.getLogger(__name__)

ENV = "FEDJAX_MED_COMPILE_CACHE"
OFF = ("", "none")
# Programs that compile faster than this are not written (JAX's default is 1 s; the
# evaluation and the small jits of a run compile in 0.1-1 s on CPU and add up).
MIN_COMPILE_SECS = 0.1


def default_dir() -> str:
  """The folder ``"auto"`` resolves to (see the module docstring)."""
  for var in (ENV, "JAX_COMPILATION_CACHE_DIR"):
    if os.environ.get(var):
      return os.environ[var]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "fedjax_med", "xla")


def resolve(value: str) -> str | None:
  """The cache folder for a ``compile_cache`` config value, or ``None`` when it is off."""
  if value is None or value.strip().lower() in OFF:
    return None
  path = default_dir() if value == "auto" else value
  return os.path.abspath(os.path.expanduser(path))


def setup(value: str) -> str | None:
  """Points JAX's persistent compilation cache at ``resolve(value)`` (or turns it off).

  Call before the run's first compile. Changing the folder within one process resets
  JAX's cache object, so a later compile uses the new folder. Returns the folder
  (``None`` = off).

  A folder that cannot be created or written (a read-only home) turns the cache off with
  a warning: the run goes on, compiling every program.
  """
  path = resolve(value)
  current = jax.config.jax_compilation_cache_dir
  if path is not None:
    try:
      os.makedirs(path, exist_ok=True)
      if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path} is not writable")
    except OSError as e:
      log.warning("compilation cache off: cannot use %s (%s); set --config.compile_cache to a "
                  "writable folder", path, e)
      path = None
  if path != current:
    jax.config.update("jax_compilation_cache_dir", path)
    from jax.experimental.compilation_cache import compilation_cache

    compilation_cache.reset_cache()  # the next compile opens the new folder
  if path is not None and "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECS)
  log.debug("compilation cache: %s", path or "off")
  return path


class CacheStats:
  """Counts JAX's persistent-cache hits and writes in this process (one listener).

  ``snapshot()`` returns ``{"hits": h, "written": w}`` so far; the difference of two
  snapshots is what a stretch of code loaded warm (hits) or compiled cold and stored
  (written).
  """

  _lock = threading.Lock()
  _counts = {"hits": 0, "written": 0}
  _registered = False

  @classmethod
  def _listen(cls, event: str, **kwargs) -> None:
    del kwargs
    key = {"/jax/compilation_cache/cache_hits": "hits",
           "/jax/compilation_cache/cache_misses": "written"}.get(event)
    if key is not None:
      with cls._lock:
        cls._counts[key] += 1

  @classmethod
  def snapshot(cls) -> dict:
    with cls._lock:
      if not cls._registered:
        monitoring.register_event_listener(cls._listen)
        cls._registered = True
      return dict(cls._counts)

  @staticmethod
  def since(before: dict) -> dict:
    now = CacheStats.snapshot()
    return {k: now[k] - before[k] for k in now}
