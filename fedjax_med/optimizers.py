"""Client and server optimizers by name: the optax transforms a config asks for.

The server optimizers are Reddi et al.'s (ICLR 2021) family on the
pseudo-gradient: ``sgd`` (FedAvg; momentum > 0: FedAvgM), ``adam``, ``yogi``,
``adagrad`` with ``eps`` = tau. ``lr`` may be an optax schedule over rounds.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import optax

# name -> (lr, momentum, eps) -> transform
SERVER: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda lr, momentum, eps: optax.sgd(lr, momentum=momentum or None),
    "adam": lambda lr, momentum, eps: optax.adam(lr, eps=eps),
    "yogi": lambda lr, momentum, eps: optax.yogi(lr, eps=eps),
    "adagrad": lambda lr, momentum, eps: optax.adagrad(lr, eps=eps),
}


def server(name: str, lr, momentum: float = 0.0, eps: float = 1e-3) -> optax.GradientTransformation:
  """The server optimizer ``name`` (a key of ``SERVER``).

  Raises:
    ValueError: unknown name.
  """
  if name not in SERVER:
    raise ValueError(f"unknown server optimizer {name!r}; choose one of {sorted(SERVER)}")
  return SERVER[name](lr, momentum, eps)


def client(lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
  """SGD (with optional momentum) plus L2 weight decay on the ``params`` collection only."""
  sgd = optax.sgd(lr, momentum=momentum or None)
  if not weight_decay:
    return sgd

  def mask(tree):  # never decay BatchNorm statistics
    return {k: jax.tree.map(lambda _, is_params=(k == "params"): is_params, v) for k, v in tree.items()}

  return optax.chain(optax.masked(optax.add_decayed_weights(weight_decay), mask), sgd)
