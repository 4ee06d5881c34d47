"""Runs a deployed federation from the server: ``python -m fedjax_med.deploy.server
--config=... --workdir=DIR --superlink=HOST:PORT [--insecure | --root_certificates=ca.crt]
[--min_sites=K] [--config.KEY=VALUE ...]``.

Beside a running SuperLink (``flower-superlink``), this submits the bundled Flower App
(``fedjax_med/deploy/app``) with ``flwr run`` and streams its log until the run ends.
The ``ServerApp`` (started by the SuperLink) waits for ``--min_sites`` sites whose config
hash matches, runs ``fl.rounds`` rounds and writes ``DIR/params.npz`` (the final server
params, flattened), ``DIR/metrics.jsonl`` and ``DIR/summary.json``. Bad input (config,
a workdir holding a run, an unreachable SuperLink): one line on stderr, exit 2,
nothing written.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from fedjax_med import errors
from fedjax_med.cli.args import fail, flag
from fedjax_med.deploy import launch


def main(argv: list[str] | None = None) -> int:
  """The server launcher (see module doc); returns the exit code."""
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a for a in argv if a.startswith("--config.")]
  p = argparse.ArgumentParser(description="Run a deployed fedjax_med federation.")
  flag(p, "config", required=True, help="config file or packaged name")
  flag(p, "workdir", required=True, help="where params.npz, metrics and summary go")
  launch.add_connection_flags(p, "the SuperLink's host:port (its --port)")
  flag(p, "min_sites", type=int, default=0, help="sites to wait for (0: fl.num_clients)")
  flag(p, "connect_timeout", type=float, default=120.0, help="seconds to wait for the sites")
  flag(p, "round_timeout", type=float, default=600.0, help="seconds a round waits for replies;"
       " a site that has not answered by then is dropped")
  args = p.parse_args([a for a in argv if not a.startswith("--config.")])
  from fedjax_med.deploy import apps, federation

  workdir = os.path.abspath(args.workdir)
  try:
    fed = federation.build(federation.load_config(args.config, overrides))
    if os.path.exists(os.path.join(workdir, "summary.json")):
      raise errors.ConfigError(f"--workdir={args.workdir} holds a finished run; choose another")
    launch.check_superlink(args.superlink, insecure=args.insecure,
                           root_certificates=args.root_certificates)
  except (errors.UserError, ValueError) as e:
    fail(str(e).splitlines()[0])
  config_file = (os.path.abspath(args.config) if os.path.exists(args.config) else args.config)
  run_config = {"config-file": config_file, "config-overrides": apps.encode_blob(overrides),
                "workdir": workdir,
                "min-sites": args.min_sites or fed.config.fl.num_clients,
                "connect-timeout": float(args.connect_timeout),
                "round-timeout": float(args.round_timeout)}
  with tempfile.TemporaryDirectory(prefix="fedjax_flwr_") as home:
    launch.write_connection(home, args.superlink, insecure=args.insecure,
                            root_certificates=args.root_certificates)
    env = {**os.environ, "FLWR_HOME": home}
    code = subprocess.call(launch.server_command(run_config), env=env)
  if code != 0:
    print(f"error: flwr run exited with {code}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
