"""Client and server optimizers by name: the optax transforms a config asks for.

The server optimizers are Reddi et al.'s (ICLR 2021) family on the
pseudo-gradient: ``sgd`` (FedAvg; momentum > 0: FedAvgM), ``adam``, ``yogi``,
``adagrad`` with ``eps`` = tau. ``lr`` may be an optax schedule over rounds.

The client optimizers (``CLIENT``) run each client's local steps: ``sgd``,
``momentum`` (heavy ball) and ``adamw``. Their state starts fresh every round,
so a learning-rate schedule over the whole run is a per-round multiplier
(``client_lr_scale``) that the round applies to the local updates
(``RoundPlan.client_lr_scale``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
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


CLIENT = ("sgd", "momentum", "adamw")
SCHEDULES = ("constant", "cosine")  # learning-rate schedules over the run (client and server)
# Heavy-ball momentum of client_opt=momentum when fl.client_momentum is not set.
DEFAULT_MOMENTUM = 0.9


def _params_only(tree):
  """Mask of the ``params`` collection: BatchNorm statistics are never decayed."""
  return {k: jax.tree.map(lambda _, is_params=(k == "params"): is_params, v)
          for k, v in tree.items()}


def client(lr: float, momentum: float = 0.0, weight_decay: float = 0.0, name: str = "sgd"):
  """The client optimizer ``name`` (one of ``CLIENT``) at learning rate ``lr``.

  ``sgd`` / ``momentum``: SGD with heavy-ball ``momentum`` (0 = none) plus L2 weight
  decay added to the gradient. ``adamw``: Adam (b1 0.9, b2 0.999) with decoupled
  weight decay (Loshchilov & Hutter). Decay applies to the ``params`` collection only.

  Raises:
    ValueError: unknown name.
  """
  if name not in CLIENT:
    raise ValueError(f"unknown client optimizer {name!r}; choose one of {list(CLIENT)}")
  if name == "adamw":
    return optax.adamw(lr, weight_decay=weight_decay, mask=_params_only)
  sgd = optax.sgd(lr, momentum=momentum or None)
  if not weight_decay:
    return sgd
  return optax.chain(optax.masked(optax.add_decayed_weights(weight_decay), _params_only), sgd)


def client_lr_scale(rounds: int, warmup_rounds: int = 0, schedule: str = "constant",
                    min_ratio: float = 0.0) -> Callable[[jax.Array], jax.Array] | None:
  """``round -> multiplier`` of the client learning rate over a run of ``rounds`` rounds.

  Linear warmup over the first ``warmup_rounds`` rounds (round r < W runs at
  ``(r + 1) / W`` of the learning rate, so round W-1 reaches it), then constant or
  a cosine decay from there to ``min_ratio`` at the last round. ``None`` for a constant
  learning rate without warmup (nothing to schedule).

  Raises:
    ValueError: unknown schedule, or a warmup that leaves no round.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown client lr schedule {schedule!r}; choose constant or cosine")
  if not 0 <= warmup_rounds < rounds:
    raise ValueError(f"warmup_rounds={warmup_rounds} must be in [0, rounds={rounds})")
  if schedule == "constant" and warmup_rounds == 0:
    return None
  decay = rounds - warmup_rounds

  def scale(round_):
    r = jnp.asarray(round_, jnp.float32)
    warm = (r + 1.0) / max(warmup_rounds, 1)
    if schedule == "cosine":
      # t: 0 at the peak (round W-1, or round 0 without warmup), 1 at the last round
      t = (r - warmup_rounds + 1.0) / decay if warmup_rounds else r / max(rounds - 1, 1)
      t = jnp.clip(t, 0.0, 1.0)
      after = min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    else:
      after = jnp.ones_like(r)
    return jnp.where(r < warmup_rounds, warm, after)

  return scale
