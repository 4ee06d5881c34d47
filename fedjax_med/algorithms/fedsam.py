"""FedSAM and FedASAM: sharpness-aware local training.

Qu et al., "Generalized Federated Learning via Sharpness Aware Minimization",
ICML 2022 (FedSAM); Caldarola et al., "Improving Generalization in Federated
Learning by Seeking Flat Minima", ECCV 2022 (FedASAM, with adaptive SAM of
Kwon et al., ICML 2021). Each local step takes the gradient at the worst-case
point ``w + e`` in a radius-``rho`` ball (``e = rho g / ||g||``; adaptive:
``e = rho T^2 g / ||T g||`` with ``T = |w| + eta``), then applies the client
optimizer to it at ``w``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from fedjax_med import types
from fedjax_med.algorithms import aggregate, base, local


def sam_grad_fn(loss_fn: types.LossFn, rho: float, adaptive: bool = False, eta: float = 0.01):
  """A ``grad_fn`` for ``local.run_steps``: the (A)SAM gradient.

  The loss and aux (BatchNorm statistics) come from the unperturbed point.
  """
  value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)

  def grad_fn(params, batch, rng):
    (loss, aux), g = value_and_grad(params, batch, rng)
    if adaptive:
      t = jax.tree.map(lambda w: jnp.abs(w) + eta, params)
      tg = jax.tree.map(jnp.multiply, t, g)
      scale = rho / jnp.maximum(aggregate.tree_norm(tg), 1e-12)
      eps = jax.tree.map(lambda ti, tgi: scale * ti * tgi, t, tg)
    else:
      scale = rho / jnp.maximum(aggregate.tree_norm(g), 1e-12)
      eps = jax.tree.map(lambda gi: scale * gi, g)
    (_, _), g_adv = value_and_grad(jax.tree.map(jnp.add, params, eps), batch, rng)
    return (loss, aux), g_adv

  return grad_fn


def fedsam(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    rho: float,
    adaptive: bool = False,
    eta: float = 0.01,
    plan: base.RoundPlan = base.RoundPlan(),
) -> types.FederatedAlgorithm:
  """Builds FedSAM (``adaptive=False``) or FedASAM (``adaptive=True``).

  Args:
    rho: SAM radius (Caldarola et al. use 0.05 for SAM, 0.5-0.7 for ASAM).
    adaptive: use adaptive SAM (scale-invariant perturbation).
    eta: ASAM's ``T = |w| + eta`` offset.
    Other arguments as ``fedavg``.
  """
  grad_fn = sam_grad_fn(loss_fn, rho, adaptive, eta)

  def client_fn(state, data, key):
    return local.local_train(None, client_optimizer, state.params, data, key,
                             unroll=plan.unroll, grad_fn=grad_fn,
                             lr_scale=base.lr_scale(plan, state.round))

  # Not record-level DP: the ascent step would use the batch's unclipped gradient.
  return base.stateless(client_fn, server_optimizer, plan, "fedasam" if adaptive else "fedsam",
                        privacy=("client",))
