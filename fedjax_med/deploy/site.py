"""Starts one site: ``python -m fedjax_med.deploy.site --config=... --data=site.npz
--client_id=3 --superlink=HOST:PORT [--insecure | --root_certificates=ca.crt]
[--config.KEY=VALUE ...]``.

Checks first, and starts nothing on bad input (one line on stderr, exit 2): the config
(same file and overrides as the server's), the data file (MedMNIST layout, the config's
image shape, channels and classes), the client id, and that the SuperLink answers.
Then runs ``flower-supernode`` (Flower's own process: retries, TLS, node
authentication) with the site's options in its node config, until it ends or the
server refuses the site (its config hash differs: exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from fedjax_med import errors
from fedjax_med.cli.args import fail, flag
from fedjax_med.deploy import launch


def main(argv: list[str] | None = None) -> int:
  """The site launcher (see module doc); returns the exit code."""
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a for a in argv if a.startswith("--config.")]
  p = argparse.ArgumentParser(description="Start one site of a deployed fedjax_med run.")
  flag(p, "config", required=True, help="the server's config file or packaged name")
  flag(p, "data", required=True, help="this site's MedMNIST-format .npz")
  flag(p, "client_id", type=int, required=True, help="this site's client id in the partition")
  launch.add_connection_flags(p)
  flag(p, "runtime_port", type=int, default=0, help="local port of the SuperNode's "
       "runtime API (0: a free one)")
  args = p.parse_args([a for a in argv if not a.startswith("--config.")])
  from fedjax_med.deploy import apps, federation, sitedata

  try:
    fed = federation.build(federation.load_config(args.config, overrides))
    if not 0 <= args.client_id < fed.config.fl.num_clients:
      raise errors.ConfigError(f"--client_id={args.client_id} must be in [0, "
                               f"{fed.config.fl.num_clients}) (fl.num_clients)")
    sitedata.load_site(args.data, fed.config.data.name, fed.config.data.size)
    launch.check_superlink(args.superlink, insecure=args.insecure,
                           root_certificates=args.root_certificates)
  except (errors.UserError, ValueError) as e:
    fail(str(e).splitlines()[0])
  with tempfile.TemporaryDirectory(prefix="fedjax_site_") as tmp:
    status = os.path.join(tmp, "refused")
    blob = apps.encode_blob({"config": os.path.abspath(args.config)
                             if os.path.exists(args.config) else args.config,
                             "overrides": overrides, "data": os.path.abspath(args.data),
                             "client_id": args.client_id, "status": status})
    port = args.runtime_port or launch.free_port()
    proc = launch.start(launch.site_command(args.superlink, blob, insecure=args.insecure,
                                            root_certificates=args.root_certificates,
                                            runtime_port=port),
                        env=dict(os.environ))
    try:
      while proc.poll() is None:
        if os.path.exists(status):
          with open(status) as f:
            text = f.read().strip()
          launch.stop_group(proc)
          fail(text)
        time.sleep(0.3)
      return proc.returncode
    finally:
      launch.stop_group(proc)


if __name__ == "__main__":
  sys.exit(main())
