"""Model zoo (flax.linen) with a backend-aware conv/pool lowering.

Families: a small CNN (the default), ResNets (``resnet``), ViT (``vit``) and
ConvNeXt (``convnext``); ``registry`` maps ``--config.model.name`` to each.
``python -m fedjax_med.models`` prints the zoo with parameters and FLOPs.
"""

from fedjax_med.models import cnn, convnext, layers, resnet, vit
from fedjax_med.models.registry import TEST_MODELS, get_model, head_pattern, names, takes_norm

__all__ = [
    "TEST_MODELS",
    "cnn",
    "convnext",
    "get_model",
    "head_pattern",
    "layers",
    "names",
    "resnet",
    "takes_norm",
    "vit",
]
