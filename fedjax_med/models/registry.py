"""Explicit model registry: name -> constructor (no getattr/importlib dispatch).

The key is the exact ``--config.model.name``. Names listed in
``_NORM_MODELS`` take ``--config.model.norm`` (``NORMS``; ``""`` = their
default, GroupNorm); the legacy ``<resnet>_{bn,gn,ln}`` names fix the norm;
the CNN has none, and ViT and ConvNeXt use LayerNorm by design.
"""

from __future__ import annotations

import functools

import flax.linen as nn

from fedjax_med.errors import ConfigError
from fedjax_med.models import cnn, convnext, resnet, vit

NORMS = resnet.NORMS
DEFAULT_NORM = "group"

_RESNETS = {
    "resnet8": resnet.ResNet8,
    "resnet14": resnet.ResNet14,
    "resnet20": resnet.ResNet20,
    "resnet18": resnet.ResNet18,
    "resnet50": resnet.ResNet50,
    "resnet_tiny": resnet._ResNet1,
}
_LEGACY = ("resnet8", "resnet14", "resnet20", "resnet_tiny")

_MODELS = {
    "cnn": cnn.SmallCNN,
    "cnn_tiny": cnn._TinyCNN,
    **_RESNETS,
    **{
        f"{name}_{short}": functools.partial(_RESNETS[name], norm=norm)
        for name in _LEGACY
        for short, norm in (("bn", "batch"), ("gn", "group"), ("ln", "layer"))
    },
    "vit_ti": vit.ViTTi,
    "vit_s": vit.ViTS,
    "vit_xs": vit.ViTXS,
    "vit_mu": vit._ViTMu,
    "convnext_atto": convnext.ConvNeXtAtto,
    "convnext_femto": convnext.ConvNeXtFemto,
    "convnext_pico": convnext.ConvNeXtPico,
    "convnext_tiny": convnext.ConvNeXtTiny,
    "convnext_xs": convnext.ConvNeXtXS,
    "convnext_mu": convnext._ConvNeXtMu,
}
_NORM_MODELS = frozenset(_RESNETS)

# The smallest model of each family, for tests and smoke runs.
TEST_MODELS = ("cnn_tiny", "resnet_tiny", "vit_mu", "convnext_mu")


def names() -> list[str]:
  return sorted(_MODELS)


# The classifier head of each family: the last Dense layer, at the top of the params tree.
# FedPer and FedRep keep it per client unless --config.personal.layers names other layers.
_HEADS = (("vit_", r"^params/head/"), ("cnn", r"^params/Dense_1/"),
          ("resnet", r"^params/Dense_0/"), ("convnext_", r"^params/Dense_0/"))


def head_pattern(name: str) -> str:
  """A regular expression over ``/``-joined parameter paths matching ``name``'s classifier head.

  Raises:
    ConfigError: unknown name.
  """
  if name not in _MODELS:
    raise ConfigError(f"unknown model.name {name!r}; choose one of: {', '.join(names())}")
  return next(pattern for prefix, pattern in _HEADS if name.startswith(prefix))


def takes_norm(name: str) -> bool:
  """Whether ``name`` accepts ``model.norm`` (the other models fix their normalization)."""
  return name in _NORM_MODELS


def check_norm(name: str, norm: str) -> None:
  """Raises ``ConfigError`` unless ``norm`` is ``""`` or a norm that ``name`` accepts."""
  if norm and norm not in NORMS:
    raise ConfigError(f"invalid --config.model.norm={norm!r}: choose one of {NORMS} or ''")
  if norm and not takes_norm(name):
    raise ConfigError(
        f"invalid --config.model.norm={norm!r}: model {name!r} fixes its normalization; "
        f"leave model.norm='' or pick one of {sorted(_NORM_MODELS)}"
    )


def get_model(
    name: str, num_classes: int, *, conv_impl: str = "auto", norm: str = "", **kwargs
) -> nn.Module:
  """Builds a registered model.

  Args:
    name: e.g. ``"cnn"``, ``"resnet18"``, ``"resnet8_gn"``, ``"vit_ti"``,
      ``"convnext_atto"`` (see ``names()``).
    num_classes: output logits.
    conv_impl: ``"auto"``, ``"native"`` or ``"im2col"`` (``models.layers``).
    norm: ``""`` (the model's default) or one of ``NORMS``, for the names
      where ``takes_norm(name)``.
    **kwargs: extra module attributes (e.g. ``width=32``).

  Raises:
    ConfigError: unknown name, or a norm the model does not take.
  """
  if name not in _MODELS:
    raise ConfigError(f"unknown model.name {name!r}; choose one of: {', '.join(names())}")
  check_norm(name, norm)
  if takes_norm(name):
    kwargs["norm"] = norm or DEFAULT_NORM
  return _MODELS[name](num_classes=num_classes, conv_impl=conv_impl, **kwargs)
