"""The Flower apps: ``server_app`` (aggregation at the server) and ``client_app`` (a site).

Messages (Flower Message API, ``flwr`` 1.42):

- ``query`` (connect): server -> every node ``{"hello": ConfigRecord(config-hash)}``;
  the site replies ``{"site": ConfigRecord(client-id, num-examples, config-hash)}`` or,
  when its config hash differs, an error reply (and tells its launcher, which exits 2).
- ``train`` (one per sampled client per round): server -> site ``{"params":
  ArrayRecord(flattened params), "server": ArrayRecord(algorithm server extras, e.g.
  SCAFFOLD's c), "round": ConfigRecord(round, key, straggler-steps)}``; the site replies
  ``{"upload": ArrayRecord(delta, or the compressed payload per leaf), "change":
  ArrayRecord(its state row's change, stateful algorithms), "metrics": MetricRecord(
  weight, loss-sum, steps, ok)}``. Images and labels never leave the site; its state row
  stays in the SuperNode's ``context.state``.

The run config (``[tool.flwr.app.config]`` of ``fedjax_med/deploy/app/pyproject.toml``,
set by ``python -m fedjax_med.deploy.server``) names the config file and overrides;
the node config (set by ``python -m fedjax_med.deploy.site``) the site's data file.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedjax_med import compression, metrics
from fedjax_med.algorithms import registry
from fedjax_med.deploy import federation, rounds, sitedata

log = logging.getLogger(__name__)

server_app = ServerApp()
client_app = ClientApp()


def encode_blob(obj) -> str:
  """A JSON value as a base64 string (safe inside Flower's TOML-like config strings)."""
  return base64.b64encode(json.dumps(obj).encode()).decode()


def decode_blob(text: str):
  """The inverse of :func:`encode_blob`."""
  return json.loads(base64.b64decode(text.encode()).decode())


def _records(arrays: list[np.ndarray]) -> ArrayRecord:
  return ArrayRecord({f"{i:04d}": _array(a) for i, a in enumerate(arrays)})


def _array(a: np.ndarray):
  from flwr.app import Array

  return Array(np.ascontiguousarray(a))


def _numpy(record: ArrayRecord) -> list[np.ndarray]:
  return [record[k].numpy() for k in sorted(record.keys())]


def _nbytes(record: ArrayRecord) -> int:
  return sum(record[k].numpy().nbytes for k in record.keys())


# ----------------------------------------------------------------------------- the server


@functools.lru_cache(maxsize=4)
def _federation(spec: str, overrides: tuple[str, ...]) -> federation.Federation:
  return federation.build(federation.load_config(spec, list(overrides)))


def _connect(grid: Grid, fed: federation.Federation, min_sites: int, timeout: float) -> dict:
  """``{client id: (node id, examples)}`` of the sites whose config hash matches."""
  asked, sites, deadline = set(), {}, time.time() + timeout
  while time.time() < deadline and len(sites) < min_sites:
    new = [n for n in grid.get_node_ids() if n not in asked]
    if not new:
      time.sleep(0.2)
      continue
    asked.update(new)
    msgs = [Message(RecordDict({"hello": ConfigRecord({"config-hash": fed.config_hash})}), n,
                    "query") for n in new]
    for reply in grid.send_and_receive(msgs, timeout=max(1.0, deadline - time.time())):
      node = reply.metadata.src_node_id
      if reply.has_error():
        log.warning("node %s refused: %s", node, reply.error.reason)
        continue
      site = reply.content["site"]
      cid = int(site["client-id"])
      if cid in sites:  # two sites started with one --client_id: keep the first
        log.warning("node %s also says it is client %d (node %s was first); ignored", node,
                    cid, sites[cid][0])
        continue
      sites[cid] = (node, int(site["num-examples"]))
  if len(sites) < min_sites:
    log.warning("only %d of %d sites connected within %.0f s (clients %s); going on with them",
                len(sites), min_sites, timeout, sorted(sites))
  return sites


@server_app.main()
def server_main(grid: Grid, context: Context) -> None:
  """Runs ``fl.rounds`` rounds over the connected sites; writes ``params.npz`` and
  ``summary.json`` (and ``metrics.jsonl``) to the run config's ``workdir``."""
  rc = context.run_config
  fed = _federation(str(rc["config-file"]), tuple(decode_blob(str(rc["config-overrides"]))))
  config, fl = fed.config, fed.config.fl
  workdir = str(rc["workdir"])
  os.makedirs(workdir, exist_ok=True)
  t0 = time.time()
  sites = _connect(grid, fed, int(rc["min-sites"]), float(rc["connect-timeout"]))
  connect_s = time.time() - t0
  log.info("connected sites %s in %.1f s", sorted(sites), connect_s)
  state = federation.initial_state(fed)
  state = state._replace(client_state=None)  # the rows live at the sites
  server_round = jax.jit(rounds.server_round, static_argnums=0)
  has_rows = registry.get(config.algorithm.name).stateful  # the sites upload a row change
  writer = metrics.JsonlWriter(os.path.join(workdir, "metrics.jsonl"))
  lost: set[int] = set()
  up_total = down_total = 0
  round_s = []
  # The last round: fl.rounds, or earlier where the next would pass privacy.max_epsilon.
  end = fl.rounds if fed.privacy is None else fed.privacy.last_round
  for r in range(end):
    t_round = time.time()
    who = federation.round_clients(fed, r)
    params_rec = _records(rounds.to_arrays(state.params))
    server_rec = _records(rounds.to_arrays(state.server)) if state.server is not None else None
    msgs, slot_of = [], {}
    live = set(grid.get_node_ids())
    for c, cid in enumerate(who.client_ids.tolist()):
      if who.dropped[c] or cid not in sites or cid in lost or sites[cid][0] not in live:
        continue  # weight 0, as the simulation's dropout
      key = federation.round_key(state, c)
      content = RecordDict({"params": params_rec, "round": ConfigRecord({
          "round": r, "key": [int(k) for k in key],
          "straggler-steps": int(fl.straggler_steps) if who.stragglers[c] else -1,
          # client-level DP: the round's clip norm (adaptive clipping moves it)
          "clip-norm": -1.0 if state.privacy is None else float(state.privacy.clip_norm)})})
      if server_rec is not None:
        content["server"] = server_rec
      msgs.append(Message(content, sites[cid][0], "train", group_id=str(r)))
      slot_of[sites[cid][0]] = c
      down_total += _nbytes(params_rec) + (_nbytes(server_rec) if server_rec else 0)
    replies = {}
    if msgs:
      for reply in grid.send_and_receive(msgs, timeout=float(rc["round-timeout"])):
        if not reply.has_error():
          replies[slot_of[reply.metadata.src_node_id]] = reply
    for c, cid in enumerate(who.client_ids.tolist()):
      if cid in sites and sites[cid][0] in slot_of and c not in replies:
        lost.add(cid)  # no answer in time: dropped now, not asked again
    num = len(who.client_ids)
    deltas, changes, weight, loss, steps = [], [], np.zeros(num, np.float32), [], []
    norms = np.zeros(num, np.float32)
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    for c in range(num):
      reply = replies.get(c)
      delta, change = zeros, (zeros if has_rows else None)
      loss_c, steps_c = jnp.zeros(fed.local_steps), jnp.zeros((), jnp.int32)
      if reply is not None and reply.content["metrics"]["ok"]:
        up = reply.content["upload"]
        up_total += _nbytes(up)
        payloads = _payload_tree(fed, state.params, _numpy(up))
        delta = rounds.decode_upload(fed.parts.plan.compressor, payloads, state.params)
        if "change" in reply.content:
          up_total += _nbytes(reply.content["change"])
          change = rounds.from_arrays(state.params, _numpy(reply.content["change"]))
        m = reply.content["metrics"]
        weight[c] = float(m["weight"])
        norms[c] = float(m["norm"])
        loss_c = jnp.full(fed.local_steps, float(m["loss-sum"]) / fed.local_steps)
        steps_c = jnp.asarray(int(m["steps"]), jnp.int32)
      deltas.append(delta)
      changes.append(change)
      loss.append(loss_c)
      steps.append(steps_c)
    stack = lambda xs: None if xs[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *xs)  # noqa: E731
    replies_t = rounds.Replies(stack(deltas), stack(changes), jnp.asarray(weight),
                               jnp.stack(loss), jnp.stack(steps), jnp.asarray(norms))
    state, _ = server_round(fed.parts, state, replies_t)
    round_s.append(time.time() - t_round)
    answered = int((weight > 0).sum())
    writer.write({"round": r + 1, "split": "train", "answered": answered,
                  "dropped_clients": int(len(who.client_ids) - answered),
                  "bytes_up": up_total, "bytes_down": down_total,
                  "round_s": round(round_s[-1], 3)})
    log.info("round %d: %d of %d sampled clients answered", r + 1, answered, num)
  np.savez(os.path.join(workdir, "params.npz"),
           **{f"{i:04d}": a for i, a in enumerate(rounds.to_arrays(state.params))})
  metrics.write_json_atomic(os.path.join(workdir, "summary.json"), {
      "rounds_completed": int(state.round), "sites": sorted(sites), "lost_sites": sorted(lost),
      "connect_s": connect_s, "round_s": round_s, "total_bytes_up": up_total,
      "total_bytes_down": down_total, "config_hash": fed.config_hash,
      "simulated_bytes_up_per_client": fed.bytes_up_per_client,
      "simulated_bytes_down_per_client": fed.bytes_down_per_client,
      **({} if fed.privacy is None else {"privacy": fed.privacy.summary(
          int(state.round), jax.device_get(state.privacy))})})


def _payload_tree(fed: federation.Federation, params, arrays: list[np.ndarray]):
  """The site's flattened upload back into the delta tree or the per-leaf payloads."""
  if fed.parts.plan.compressor is None:
    return rounds.from_arrays(params, arrays)
  template = _payload_template(fed, params)
  leaves, treedef = jax.tree.flatten(template)
  if len(leaves) != len(arrays):
    raise ValueError(f"expected {len(leaves)} payload arrays, got {len(arrays)}")
  return jax.tree.unflatten(treedef, [jnp.asarray(a) for a in arrays])


def _payload_template(fed: federation.Federation, params):
  """Shapes of the payloads ``compression.encode_tree`` makes for ``params``."""
  comp = fed.parts.plan.compressor
  return jax.eval_shape(
      lambda p: compression.encode_tree(comp, p, jax.random.PRNGKey(0), None)[0], params)


# ----------------------------------------------------------------------------- a site


@functools.lru_cache(maxsize=2)
def _site(blob: str):
  """``(site options, federation, dataset, initial state)`` of this node (cached)."""
  opts = decode_blob(blob)
  fed = _federation(opts["config"], tuple(opts["overrides"]))
  ds = sitedata.load_site(opts["data"], fed.config.data.name, fed.config.data.size)
  return opts, fed, ds, federation.initial_state(fed)


def _refuse(opts: dict, text: str) -> None:
  """Tells the site's launcher (``deploy.site``) to exit 2 with ``text``."""
  path = opts.get("status")
  if path:
    with open(path + ".tmp", "w") as f:
      f.write(text + "\n")
    os.replace(path + ".tmp", path)


@client_app.query()
def site_hello(msg: Message, context: Context) -> Message:
  """The connect handshake: the site's client id and size, or a refusal (config hash)."""
  opts, fed, ds, _ = _site(str(context.node_config["site"]))
  theirs = str(msg.content["hello"]["config-hash"])
  if theirs != fed.config_hash:
    text = (f"this site's config (hash {fed.config_hash[:12]}) differs from the server's "
            f"(hash {theirs[:12]}); start the site with the server's --config and overrides")
    _refuse(opts, text)
    raise ValueError(text)
  return Message(RecordDict({"site": ConfigRecord({
      "client-id": int(opts["client_id"]), "num-examples": len(ds.train.labels),
      "config-hash": fed.config_hash})}), reply_to=msg)


@client_app.train()
def site_train(msg: Message, context: Context) -> Message:
  """One local update of this site's client (``rounds.site_update``, jitted)."""
  opts, fed, ds, init = _site(str(context.node_config["site"]))
  fl, cid = fed.config.fl, int(opts["client_id"])
  cfg = msg.content["round"]
  params = rounds.from_arrays(init.params, _numpy(msg.content["params"]))
  server = None
  if "server" in msg.content:
    server = rounds.from_arrays(init.server, _numpy(msg.content["server"]))
  state = init._replace(params=params, server=server, client_state=None,
                        round=jnp.asarray(int(cfg["round"]), jnp.int32))
  row = federation.initial_row(fed, init)
  if row is not None and "row" in context.state:
    row = rounds.from_arrays(row, _numpy(context.state["row"]))
  straggler = int(cfg["straggler-steps"])
  batch = sitedata.site_batch(ds.train.images, ds.train.labels, cid, fl.num_clients,
                              local_steps=fed.local_steps, batch_size=fl.batch_size,
                              seed=fed.config.seed, round_idx=int(cfg["round"]),
                              straggler_steps=None if straggler < 0 else straggler)
  data = {"image": batch.image[0], "label": batch.label[0], "mask": batch.mask[0]}
  key = jnp.asarray(np.asarray(cfg["key"], np.uint32))
  clip = float(cfg["clip-norm"])
  res = jax.device_get(jax.jit(rounds.site_update, static_argnums=0)(
      fed.parts, state, data, row, key, None if clip < 0 else jnp.asarray(clip, jnp.float32)))
  ok = bool(res.ok)
  if row is not None and ok:
    context.state["row"] = _records(rounds.to_arrays(res.new_row))
  content = RecordDict({
      "upload": _records(rounds.to_arrays(res.upload)),
      "metrics": MetricRecord({"weight": float(batch.weight[0]) if ok else 0.0,
                               "loss-sum": float(np.sum(res.loss)), "steps": int(res.steps),
                               "ok": int(ok), "norm": float(res.norm)})})
  if res.row_change is not None:
    content["change"] = _records(rounds.to_arrays(res.row_change))
  return Message(content, reply_to=msg)
