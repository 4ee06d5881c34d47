"""Explicit model registry: name -> constructor (no getattr/importlib dispatch)."""

from __future__ import annotations

import functools

import flax.linen as nn

from fedjax_med.errors import ConfigError
from fedjax_med.models import cnn, resnet

_MODELS = {
    "cnn": cnn.SmallCNN,
    "cnn_tiny": cnn._TinyCNN,
    **{
        f"{name}_{short}": functools.partial(ctor, norm=norm)
        for name, ctor in (
            ("resnet8", resnet.ResNet8),
            ("resnet14", resnet.ResNet14),
            ("resnet20", resnet.ResNet20),
            ("resnet_tiny", resnet._ResNet1),
        )
        for short, norm in (("bn", "batch"), ("gn", "group"), ("ln", "layer"))
    },
}


def names() -> list[str]:
  return sorted(_MODELS)


def get_model(name: str, num_classes: int, *, conv_impl: str = "auto", **kwargs) -> nn.Module:
  """Builds a registered model.

  Args:
    name: e.g. ``"cnn"``, ``"resnet8_gn"``, ``"resnet20_bn"`` (see ``names()``).
    num_classes: output logits.
    conv_impl: ``"auto"``, ``"native"`` or ``"im2col"`` (``models.layers``).
    **kwargs: extra module attributes (e.g. ``width=32``).

  Raises:
    ConfigError: unknown name.
  """
  if name not in _MODELS:
    raise ConfigError(f"unknown model.name {name!r}; choose one of: {', '.join(names())}")
  return _MODELS[name](num_classes=num_classes, conv_impl=conv_impl, **kwargs)
