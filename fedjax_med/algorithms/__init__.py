"""Federated algorithms as ``(init, round)`` pairs of pure functions."""

from fedjax_med.algorithms import aggregate, base, client_store, local
from fedjax_med.algorithms.centralized import centralized
from fedjax_med.algorithms.fedavg import fedavg
from fedjax_med.algorithms.fedbn import fedbn, is_batchnorm_leaf
from fedjax_med.algorithms.feddyn import feddyn
from fedjax_med.algorithms.fedprox import fedprox, proximal_loss
from fedjax_med.algorithms.fedsam import fedsam, sam_grad_fn
from fedjax_med.algorithms.scaffold import scaffold
from fedjax_med.algorithms.swa import cyclical_lr, swa

__all__ = [
    "aggregate", "base", "centralized", "client_store", "cyclical_lr", "fedavg", "fedbn", "feddyn",
    "fedprox", "fedsam", "is_batchnorm_leaf", "local", "proximal_loss", "sam_grad_fn", "scaffold",
    "swa",
]
