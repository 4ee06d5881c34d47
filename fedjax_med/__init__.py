"""fedjax_med: federated learning on medical images, one compiled function per round."""

from fedjax_med import algorithms, errors, types

__version__ = "0.1.0"

__all__ = ["algorithms", "errors", "types", "__version__"]
