"""Model zoo (flax.linen) with a backend-aware conv/pool lowering.

Families: a small CNN (the default), ResNets (``resnet``), ViT (``vit``) and
ConvNeXt (``convnext``); 3D CNN and ResNet-18 for volumes (``cnn3d``,
``resnet18_3d``); ``registry`` maps ``--config.model.name`` to each.
``python -m fedjax_med.models`` prints the zoo with parameters and FLOPs
(``--depth 28``: the 3D models).
"""

from fedjax_med.models import cnn, convnext, layers, resnet, vit
from fedjax_med.models.registry import (
    TEST_MODELS,
    TEST_MODELS_3D,
    check_input,
    get_model,
    head_pattern,
    names,
    spatial_dims,
    takes_norm,
)

__all__ = [
    "TEST_MODELS",
    "TEST_MODELS_3D",
    "check_input",
    "cnn",
    "convnext",
    "get_model",
    "head_pattern",
    "layers",
    "names",
    "resnet",
    "spatial_dims",
    "takes_norm",
    "vit",
]
