"""Deployed round on loopback (Flower SuperLink + K SuperNodes) vs the simulated round.

For K in {4, 8} small-CNN sites (``model.name=cnn``, 28 px, S=5, B=32, every site in
every round) it starts a SuperLink and K site processes on 127.0.0.1, runs the server
for ``--rounds`` rounds and reads the server's ``summary.json``: the start-up time
(SuperLink start until every site has connected), and the median deployed round
(rounds after the first; each round Flower starts a fresh ClientApp process per site,
which imports JAX and reads the compiled local update from the persistent compilation
cache). The simulated round is the one-jit round of the same config, compiled ahead,
median of a few calls. Prints a table and, last, one JSON line.

``python bench/deploy_overhead.py`` (``--quick``: K=4 only, 2 rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

import jax  # noqa: E402

from bench import harness  # noqa: E402
from fedjax_med import experiment, sharding  # noqa: E402
from fedjax_med.data import synthetic  # noqa: E402
from fedjax_med.deploy import federation, launch, split  # noqa: E402

CONFIG = '''
from fedjax_med.configs import base


def get_config():
  return base.apply(base.get_config(), {{
      "data.root": "{root}", "data.download": False, "data.verify_md5": False,
      "model.name": "cnn", "partition.kind": "iid", "fl.rounds": {rounds},
      "fl.num_clients": {k}, "fl.clients_per_round": {k}, "fl.local_steps": 5,
      "fl.batch_size": 32, "log.progress": "none"}})
'''


def simulated_round_s(config_path: str, repeats: int = 3) -> float:
  """Median seconds of the one-jit round of the config (compiled ahead)."""
  exp = experiment.build(federation.load_config(config_path))
  mesh = sharding.make_mesh()
  state = sharding.replicate(exp.initial_state(), mesh)
  pad = sharding.pad_multiple(exp.round_clients, mesh, exp.engine.client_chunk_size)
  batch = sharding.shard_clients(exp.make_batch(0, pad), mesh)
  round_fn = sharding.jit_round(exp.algorithm.round, mesh, donate=False)  # called again
  jax.block_until_ready(round_fn(state, batch))
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(round_fn(state, batch))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def deployed(tmp: str, config_path: str, k: int) -> dict:
  """Start-up and round times of one loopback deployment with ``k`` sites."""
  assert split.main([f"--config={config_path}", f"--out={tmp}/sites"]) == 0
  env = {**os.environ, "PYTHONPATH": _REPO, "FLWR_HOME": os.path.join(tmp, "flwr"),
         "JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "xla-cache"),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  port = launch.free_port()
  address = f"127.0.0.1:{port}"
  procs = []
  t0 = time.perf_counter()
  try:
    procs.append(launch.start(["flower-superlink", "--insecure", "--port", str(port),
                               "--disable-runtime-dependency-installation"],
                              os.path.join(tmp, "superlink.log"), env=env))
    launch.reachable(address, timeout=60)
    for c in range(k):
      procs.append(launch.start(
          [sys.executable, "-m", "fedjax_med.deploy.site", f"--config={config_path}",
           f"--data={split.site_path(tmp + '/sites', c)}", f"--client_id={c}",
           f"--superlink={address}", "--insecure"], os.path.join(tmp, f"site{c}.log"), env=env))
    server = launch.start(
        [sys.executable, "-m", "fedjax_med.deploy.server", f"--config={config_path}",
         f"--workdir={tmp}/run", f"--superlink={address}", "--insecure"],
        os.path.join(tmp, "server.log"), env=env)
    procs.append(server)
    server.wait(timeout=1800)
    wall = time.perf_counter() - t0
  finally:
    for p in reversed(procs):
      launch.stop_group(p)
  with open(os.path.join(tmp, "run", "summary.json")) as f:
    summary = json.load(f)
  rounds = summary["round_s"]
  return {"startup_s": wall - sum(rounds), "connect_s": summary["connect_s"],
          "first_round_s": rounds[0], "round_s": statistics.median(rounds[1:] or rounds),
          "bytes_up_per_round": summary["total_bytes_up"] / len(rounds),
          "simulated_bytes_up_per_round": summary["simulated_bytes_up_per_client"] * k}


def main(argv=None) -> int:
  """Runs the benchmark (see module doc)."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--quick", action="store_true", help="K=4 only, 2 rounds")
  args = p.parse_args(argv)
  ks, num_rounds = ((4,), 2) if args.quick else ((4, 8), 3)
  rows, result = [], {"bench": "deploy_overhead", **harness.environment(), "rounds": num_rounds}
  for k in ks:
    with tempfile.TemporaryDirectory(prefix=f"deploy_bench_{k}_") as tmp:
      synthetic.write_npz(os.path.join(tmp, "data", "pneumoniamnist.npz"), name="pneumoniamnist",
                          n_train=64 * k, n_val=32, n_test=32)
      path = os.path.join(tmp, "bench_config.py")
      with open(path, "w") as f:
        f.write(CONFIG.format(root=os.path.join(tmp, "data"), rounds=num_rounds, k=k))
      sim = simulated_round_s(path)
      dep = deployed(tmp, path, k)
    ratio = dep["round_s"] / sim
    result[f"k{k}"] = {**dep, "simulated_round_s": sim, "round_ratio": ratio}
    rows.append([k, harness.fmt(sim), harness.fmt(dep["round_s"]), harness.fmt(ratio, ".1f"),
                 harness.fmt(dep["first_round_s"]), harness.fmt(dep["startup_s"], ".1f")])
  harness.log(harness.table(["K", "simulated s", "deployed s", "ratio", "first round s",
                             "start-up s"], rows))
  harness.emit_json(result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
