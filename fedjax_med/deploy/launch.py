"""Starting the Flower processes of a deployed run, and the checks done before.

``site_command`` / ``server_command`` build the argv of ``flower-supernode`` and
``flwr run``; :func:`reachable` is the check that an address answers before anything
is started; :func:`stop_group` ends a started process and everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

APP_DIR = str(Path(__file__).resolve().parent / "app")  # the Flower App bundle's folder
CONNECTION = "fedjax-med"  # the SuperLink connection name written to FLWR_HOME


def split_address(address: str) -> tuple[str, int]:
  """``host:port`` -> ``(host, port)``.

  Raises:
    ValueError: not ``host:port`` with an integer port.
  """
  host, sep, port = address.rpartition(":")
  if not sep or not host or not port.isdigit():
    raise ValueError(f"expected host:port, got {address!r}")
  return host.strip("[]"), int(port)


def reachable(address: str, timeout: float = 5.0) -> bool:
  """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
  host, port = split_address(address)
  deadline = time.time() + timeout
  while True:
    try:
      with socket.create_connection((host, port), timeout=min(1.0, timeout)):
        return True
    except OSError:
      if time.time() >= deadline:
        return False
      time.sleep(0.2)


def add_connection_flags(p, superlink_help: str = "the SuperLink's host:port") -> None:
  """``--superlink``, ``--insecure`` and ``--root_certificates`` of the launchers."""
  from fedjax_med.cli.args import flag

  flag(p, "superlink", required=True, help=superlink_help)
  flag(p, "insecure", action="store_true", help="no TLS (tests on loopback only)")
  flag(p, "root_certificates", default=None, help="CA certificate of the SuperLink (TLS)")


def check_superlink(superlink: str, *, insecure: bool, root_certificates: str | None) -> None:
  """Raises ``ConfigError`` unless TLS is set up (or ``insecure``), ``superlink`` is
  ``host:port`` and the SuperLink answers there (within 10 s)."""
  from fedjax_med import errors

  if not insecure and not root_certificates:
    raise errors.ConfigError("give --root_certificates=<CA of the SuperLink> (TLS) or "
                             "--insecure (loopback tests only)")
  split_address(superlink)
  if not reachable(superlink, timeout=10.0):
    raise errors.ConfigError(f"the SuperLink at {superlink} does not answer (is "
                             "flower-superlink running? check --superlink and the firewall)")


def free_port() -> int:
  """A TCP port free on 127.0.0.1 now."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def write_connection(flwr_home: str, superlink: str, *, insecure: bool,
                     root_certificates: str | None) -> None:
  """Writes ``FLWR_HOME/config.toml`` with one SuperLink connection (``CONNECTION``)."""
  os.makedirs(flwr_home, exist_ok=True)
  lines = ["[superlink]", f'default = "{CONNECTION}"', "", f"[superlink.{CONNECTION}]",
           f'address = "{superlink}"']
  if insecure:
    lines.append("insecure = true")
  if root_certificates:
    lines.append(f'root-certificates = "{os.path.abspath(root_certificates)}"')
  Path(flwr_home, "config.toml").write_text("\n".join(lines) + "\n")


def site_command(superlink: str, site_blob: str, *, insecure: bool,
                 root_certificates: str | None, runtime_port: int) -> list[str]:
  """``flower-supernode`` for one site; its node config carries the site's options."""
  argv = ["flower-supernode", "--superlink", superlink, "--port", str(runtime_port),
          "--node-config", f'site="{site_blob}"']
  if insecure:
    argv.append("--insecure")
  if root_certificates:
    argv += ["--root-certificates", root_certificates]
  return argv


def server_command(run_config: dict) -> list[str]:
  """``flwr run`` of the bundled app with ``run_config`` (strings quoted, numbers bare)."""
  items = " ".join(f'{k}="{v}"' if isinstance(v, str) else f"{k}={v}"
                   for k, v in run_config.items())
  return ["flwr", "run", APP_DIR, CONNECTION, "--run-config", items, "--stream"]


def start(argv: list[str], log_path: str | None = None, env: dict | None = None
          ) -> subprocess.Popen:
  """Starts ``argv`` in a new process group (output to ``log_path``, else inherited)."""
  if log_path is None:
    return subprocess.Popen(argv, env=env, start_new_session=True)
  with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
  """Every process below ``pid`` (from /proc; empty where /proc is absent)."""
  children: dict[int, list[int]] = {}
  for d in Path("/proc").glob("[0-9]*"):
    try:
      ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
      continue
    children.setdefault(ppid, []).append(int(d.name))
  out, todo = [], [pid]
  while todo:
    for c in children.get(todo.pop(), []):
      out.append(c)
      todo.append(c)
  return out


def stop_group(proc: subprocess.Popen, timeout: float = 10.0) -> None:
  """Ends ``proc``, its process group and every process it started (SIGTERM, then SIGKILL).

  Flower's SuperLink and SuperNode start helpers in process groups of their own, so
  the descendants are collected first and signalled one by one too.
  """
  if proc.poll() is not None and not descendants(proc.pid):
    return
  pids = [proc.pid, *descendants(proc.pid)]
  for sig in (signal.SIGTERM, signal.SIGKILL):
    for pid in pids:
      for kill in (os.killpg, os.kill):
        try:
          kill(pid, sig)
        except OSError:  # gone already, or not a group leader
          pass
    try:
      proc.wait(timeout=timeout if sig == signal.SIGTERM else 5)
      if not any(_alive(p) for p in pids[1:]):
        return
      time.sleep(0.5)
    except subprocess.TimeoutExpired:
      continue


def _alive(pid: int) -> bool:
  try:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
  except (OSError, IndexError):
    return False
  return state != "Z"
