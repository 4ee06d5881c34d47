"""Prints the algorithm registry as the markdown table of README's "Algorithms" section.

  python -m fedjax_med.algorithms
"""

from fedjax_med.algorithms import registry


def table() -> str:
  """One row per registered name: summary, hyper-parameters, server defaults, DP levels."""
  rows = ["| name | what | hyper-parameters (default) | server optimizer (default) | DP levels |",
          "|---|---|---|---|---|"]
  for name, e in registry.ENTRIES.items():
    hp = ", ".join(f"`algorithm.{name}.{k}` ({h.default:g})" for k, h in e.hparams.items())
    if e.takes_client_lr:
      hp = "uses `fl.client_lr` (plain local SGD)"
    server = e.server.opt + (" (fixed by the name)" if e.server_opt_fixed else "")
    server += f", lr {e.server.lr:g}" + (f", momentum {e.server.momentum:g}" if e.server.momentum
                                         else "")
    if not e.communicates:
      server = "none (one model)" if not e.federated else "none (a model per site)"
    state = "; per-client state" if e.stateful else ""
    dp = ", ".join(e.privacy) or "—"
    rows.append(f"| `{name}` | {e.summary}{state} | {hp or '—'} | {server} | {dp} |")
  return "\n".join(rows)


if __name__ == "__main__":
  print(table())
