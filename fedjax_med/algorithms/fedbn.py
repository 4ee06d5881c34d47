"""FedBN: normalization layers stay local to each client.

Li et al., "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization", ICLR 2021. Each client keeps its own BatchNorm scale/bias and
running statistics across rounds (all clients start from the initial model's
values); every other parameter is averaged as in FedAvg. The round is
``personal.partial_sharing`` with the BatchNorm leaves as the personal layers
(FedPer is the same round with the classifier head).

Global model for evaluation: the server's copy of the BatchNorm leaves is the
average of the participating clients' local ones (FedAvg applied to them), so
``state.params`` is a usable global model ("averaged BN"). Client ``c``'s own
model (its own BatchNorm layers) is ``alg.client_params(state, c)``; the
per-client evaluation (``fedjax_med/evaluation.py``) uses it.
"""

from __future__ import annotations

import optax

from fedjax_med import types
from fedjax_med.algorithms import base, personal
from fedjax_med.algorithms.personal import is_batchnorm_leaf, with_local_leaves  # noqa: F401


def fedbn(
  loss_fn: types.LossFn,
  client_optimizer: optax.GradientTransformation,
  server_optimizer: optax.GradientTransformation,
  *,
  plan: base.RoundPlan,
  is_local: personal.IsLocal = is_batchnorm_leaf,
) -> types.FederatedAlgorithm:
  """Builds FedBN. ``is_local(path) -> bool`` selects the leaves kept per client.

  ``state.client_state.algorithm`` is the tuple of every client's local leaves
  (each stacked ``[N, ...]``); ``client_params(state, c)`` is client ``c``'s model.

  Raises:
    ValueError (at ``init``): the model has no local leaves (e.g. GroupNorm).
  """
  what = "BatchNorm leaves" if is_local is is_batchnorm_leaf else "personal layers"
  return personal.partial_sharing(loss_fn, client_optimizer, server_optimizer, plan=plan,
                                  is_local=is_local, name="fedbn", what=what)
