"""Federated algorithms as ``(init, round)`` pairs of pure functions.

Public API: the builders (each ``builder(loss_fn, client_optimizer,
server_optimizer, *, <hyper-parameters>, plan)``), the :class:`RoundPlan` they
share, the aggregators, the simulated ``attacks``, the ``registry`` that names them, and ``swa``. The
modules ``base`` (the round skeleton), ``local`` (the local-update primitive
and the client map), ``client_store`` (stacked per-client rows), ``personal``
(which layers stay with each client),
``aggregate`` (tree arithmetic over the client axis) and ``robust`` (the
arithmetic of the robust aggregators; build them with ``aggregators.get``) are
internals: importable for research code that builds new algorithms, but their
signatures may change between releases.
"""

# Internals: importable (``algorithms.base``...) for research code, not in ``__all__``.
from fedjax_med.algorithms import (  # noqa: F401
    aggregate,
    aggregators,
    attacks,
    base,
    client_store,
    local,
    personal,
    registry,
    robust,
)
from fedjax_med.algorithms.aggregators import Aggregator
from fedjax_med.algorithms.apfl import apfl
from fedjax_med.algorithms.base import RoundPlan
from fedjax_med.algorithms.centralized import centralized
from fedjax_med.algorithms.ditto import ditto
from fedjax_med.algorithms.fedavg import fedavg
from fedjax_med.algorithms.fedbn import fedbn, is_batchnorm_leaf
from fedjax_med.algorithms.feddyn import feddyn
from fedjax_med.algorithms.fedexp import fedexp
from fedjax_med.algorithms.fedper import fedper
from fedjax_med.algorithms.fedprox import fedprox, proximal_loss
from fedjax_med.algorithms.fedrep import fedrep
from fedjax_med.algorithms.fedsam import fedsam, sam_grad_fn
from fedjax_med.algorithms.local_baseline import local_baseline
from fedjax_med.algorithms.registry import build
from fedjax_med.algorithms.scaffold import scaffold
from fedjax_med.algorithms.swa import cyclical_lr, swa
from fedjax_med.types import (
    ClientBatch,
    ClientState,
    FederatedAlgorithm,
    RoundMetrics,
    ServerState,
)

__all__ = [
    "Aggregator", "ClientBatch", "ClientState", "FederatedAlgorithm", "RoundMetrics", "RoundPlan",
    "ServerState", "aggregators", "apfl", "attacks", "build", "centralized", "cyclical_lr",
    "ditto", "fedavg", "fedbn", "feddyn", "fedexp", "fedper", "fedprox", "fedrep", "fedsam",
    "is_batchnorm_leaf", "local_baseline", "proximal_loss", "registry",
    "sam_grad_fn", "scaffold", "swa",
]
