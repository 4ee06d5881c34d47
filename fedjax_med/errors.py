"""Errors that end a run with one clear message instead of a traceback.

``launch/main.py`` turns a :class:`UserError` into its message on stderr and
exit code 2: bad input is the user's to fix (missing or corrupt data, invalid
config values, impossible partitions), and the message says how.
"""


class UserError(Exception):
  """Bad input: the message names the problem and the fix."""


class ConfigError(UserError, ValueError):
  """An invalid or inconsistent configuration value."""


class DataError(UserError):
  """A data file that is missing, corrupt, or not in the expected format."""


class NonFiniteLossError(RuntimeError):
  """Training diverged (NaN/Inf loss); the last good checkpoint is kept."""


class CheckpointMismatchError(UserError):
  """A workdir's checkpoint does not fit the state this run builds (another algorithm,
  model or an older state layout)."""
