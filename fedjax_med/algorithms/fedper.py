"""FedPer: a shared body and a personal classifier head per client.

Arivazhagan et al., "Federated Learning with Personalization Layers", 2019.
Each client keeps its own copy of the personal layers (by default the model's
classifier head, ``fedjax_med.models.head_pattern``; any layers with
``--config.personal.layers``) and trains them jointly with the shared body for
S steps a round; the server averages the rest as FedAvg. It is FedBN's round
(``personal.partial_sharing``) with other personal layers. ``state.params``
holds the average of the clients' heads, the global model a site that never
took part gets; ``client_params(state, c)`` is client ``c``'s own model.
"""

from __future__ import annotations

import optax

from fedjax_med import types
from fedjax_med.algorithms import base, personal


def fedper(
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    plan: base.RoundPlan,
    is_local: personal.IsLocal,
) -> types.FederatedAlgorithm:
  """Builds FedPer with ``is_local(path)`` choosing the personal layers.

  Raises:
    ValueError (at ``init``): ``is_local`` selects no leaf, or every leaf.
  """
  return personal.partial_sharing(loss_fn, client_optimizer, server_optimizer, plan=plan,
                                  is_local=is_local, name="fedper", what="personal layers")
