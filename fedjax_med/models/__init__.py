"""Model zoo (flax.linen) with a backend-aware conv/pool lowering."""

from fedjax_med.models import cnn, layers, resnet
from fedjax_med.models.registry import get_model, names

__all__ = ["cnn", "get_model", "layers", "names", "resnet"]
