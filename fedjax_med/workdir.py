"""A run's workdir: its identity (the config that made it) and an exclusive lock.

A workdir belongs to one resolved config. The first start writes
``config.json``; a rerun (to resume) compares the new resolved config with it
and refuses a mismatch, naming the keys, before anything is written, so one
workdir never mixes two experiments. Keys that do not change results
(``IGNORED``: where the data is read from, logging, eval batch size, how often
checkpoints are kept) may differ. ``--fresh`` (``clear``) starts over.

``Lock`` holds an exclusive ``fcntl`` lock on ``<workdir>/.lock`` for the run:
a second process on the same workdir stops at once, naming the holder's PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil

from fedjax_med import errors

# Dotted config keys that may differ between the runs of one workdir.
IGNORED = frozenset({"log.progress", "eval.batch_size", "ckpt.keep", "ckpt.every", "data.root",
                     "data.download", "compile_cache"})
# What a run writes into its workdir (``clear`` removes exactly these).
RUN_FILES = ("config.json", "partition.json", "metrics.jsonl", "summary.json", "checkpoints")


class WorkdirError(errors.UserError):
  """The workdir belongs to another config, is locked by another process, or is unusable."""


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def differences(old: dict, new: dict) -> list[str]:
  """Dotted keys whose values differ between two config dicts (``IGNORED`` left out)."""
  a, b = _flatten(old), _flatten(new)
  return sorted(k for k in set(a) | set(b) if k not in IGNORED and a.get(k, "<missing>")
                != b.get(k, "<missing>"))


def check_identity(workdir: str, config: dict, defaults: dict | None = None) -> None:
  """Raises ``WorkdirError`` if ``workdir/config.json`` exists and differs from ``config``.

  ``defaults``: the config defaults of this version. A key that the run's
  ``config.json`` lacks (it was written by an older version, before the key
  existed) is no difference while ``config`` leaves it at its default (a feature
  that is off now was absent then), so runs resume across such upgrades.

  Also rejects a ``workdir`` that is a file or cannot be created or written.
  """
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise WorkdirError(f"--workdir={workdir} is a file, not a directory; choose another path")
  parent = os.path.dirname(os.path.abspath(workdir))
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  target = workdir if os.path.isdir(workdir) else parent
  if not os.path.isdir(target) or not os.access(target, os.W_OK | os.X_OK):
    raise WorkdirError(f"cannot write to --workdir={workdir} ({target} is not a writable "
                       "directory); choose another path")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    return
  config = json.loads(json.dumps(config))  # tuples -> lists, as config.json holds them
  try:
    with open(path) as f:
      old = json.load(f)
  except (OSError, ValueError) as e:
    raise WorkdirError(f"{path} is unreadable ({e}); rerun with --fresh to start over") from None
  diff = differences(old, config)
  if defaults is not None:
    had, default, new = _flatten(old), _flatten(json.loads(json.dumps(defaults))), _flatten(config)
    diff = [k for k in diff if k in had or k not in default or new.get(k) != default[k]]
  if diff:
    shown = ", ".join(f"{k} ({_flatten(old).get(k, '<missing>')!r} -> "
                      f"{_flatten(config).get(k, '<missing>')!r})" for k in diff[:8])
    more = f" and {len(diff) - 8} more" if len(diff) > 8 else ""
    raise WorkdirError(
        f"--workdir={workdir} holds a run of another config: {shown}{more}. Use another "
        "--workdir, or --fresh to delete that run and start over.")


def clear(workdir: str) -> None:
  """Removes a previous run's files from ``workdir`` (``--fresh``); other files stay."""
  for name in RUN_FILES:
    path = os.path.join(workdir, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)


class Lock:
  """``with Lock(workdir):`` holds an exclusive lock on the workdir for the block."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, ".lock")
    self._fd = None

  def __enter__(self) -> Lock:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
      os.close(fd)
      raise WorkdirError(
          f"--workdir={os.path.dirname(self.path)} is in use by process {holder}; wait for it "
          "to finish or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    self._fd = fd
    return self

  def __exit__(self, *exc_info) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None
