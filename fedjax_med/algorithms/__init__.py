"""Federated algorithms as ``(init, round)`` pairs of pure functions."""

from fedjax_med.algorithms import aggregate, local
from fedjax_med.algorithms.centralized import centralized
from fedjax_med.algorithms.fedavg import fedavg

__all__ = ["aggregate", "centralized", "fedavg", "local"]
