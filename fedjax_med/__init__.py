"""fedjax_med: federated learning on medical images, one compiled function per round."""

from fedjax_med import algorithms, config_files, errors, types

config_files.ensure_importable()  # fedjax_med.configs in a source checkout without an install

__version__ = "0.1.0"

__all__ = ["algorithms", "errors", "types", "__version__"]
