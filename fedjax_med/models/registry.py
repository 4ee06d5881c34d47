"""Explicit model registry: name -> constructor (no getattr/importlib dispatch).

The key is the exact ``--config.model.name``. Names listed in
``_NORM_MODELS`` take ``--config.model.norm`` (``NORMS``; ``""`` = their
default, GroupNorm; the CNNs' default is none); the legacy ``<resnet>_{bn,gn,ln}``
names fix the norm; ViT and ConvNeXt use LayerNorm by design.

3D models (``cnn3d``, ``resnet18_3d`` and their tiny test variants) take
volumes ``[B, D, H, W, C]``, the others images ``[B, H, W, C]``:
``spatial_dims(name)`` tells which, and ``check_input(name, image_shape)``
turns a mismatch into a ``ConfigError`` that names models that fit the data.
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
    "resnet18_3d": resnet.ResNet18_3D,
    "resnet3d_tiny": resnet._ResNet3D1,
}
_LEGACY = ("resnet8", "resnet14", "resnet20", "resnet_tiny")

_MODELS = {
    "cnn": cnn.SmallCNN,
    "cnn_tiny": cnn._TinyCNN,
    "cnn3d": cnn.CNN3D,
    "cnn3d_tiny": cnn._TinyCNN3D,
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
_CNNS = frozenset({"cnn", "cnn_tiny", "cnn3d", "cnn3d_tiny"})  # model.norm "" = none
_NORM_MODELS = frozenset(_RESNETS) | _CNNS
# The models that take volumes [B, D, H, W, C]; every other one takes images [B, H, W, C].
_3D = frozenset({"cnn3d", "cnn3d_tiny", "resnet18_3d", "resnet3d_tiny"})

# The smallest model of each family, for tests and smoke runs (2D; 3D apart).
TEST_MODELS = ("cnn_tiny", "resnet_tiny", "vit_mu", "convnext_mu")
TEST_MODELS_3D = ("cnn3d_tiny", "resnet3d_tiny")


def names(spatial_dims: int | None = None) -> list[str]:
  """The registered names, sorted; only the 2D or 3D ones if ``spatial_dims`` is 2 or 3."""
  if spatial_dims not in (None, 2, 3):
    raise ValueError(f"spatial_dims must be None, 2 or 3, got {spatial_dims!r}")
  return sorted(n for n in _MODELS if spatial_dims in (None, 3 if n in _3D else 2))


def _check_name(name: str) -> None:
  if name not in _MODELS:
    raise ConfigError(f"unknown model.name {name!r}; choose one of: {', '.join(names())}")


def spatial_dims(name: str) -> int:
  """3 for a model of volumes ``[B, D, H, W, C]``, 2 for one of images ``[B, H, W, C]``.

  Raises:
    ConfigError: unknown name.
  """
  _check_name(name)
  return 3 if name in _3D else 2


def _suggestions(dims: int) -> str:
  """The names to offer for ``dims``-D data: no test variants, no fixed-norm aliases."""
  tests = {*TEST_MODELS, *TEST_MODELS_3D}
  return ", ".join(n for n in names(dims)
                   if n not in tests and not n.startswith("resnet_tiny")
                   and not n.endswith(("_bn", "_gn", "_ln")))


def check_input(name: str, image_shape) -> None:
  """Raises ``ConfigError`` unless model ``name`` takes examples of ``image_shape``.

  Args:
    name: a registered model name.
    image_shape: one example's shape without the batch axis: ``(H, W, C)`` of
      an image or ``(D, H, W, C)`` of a volume.

  Raises:
    ConfigError: unknown name, a shape that is neither, or a 2D model given
      volumes (or a 3D model given images); the message names models that fit.
  """
  dims = spatial_dims(name)
  shape = [int(n) for n in image_shape]
  kinds = {2: "2D images [H, W, C]", 3: "3D volumes [D, H, W, C]"}
  data_dims = len(shape) - 1
  if data_dims not in kinds:
    raise ConfigError(
        f"model.name={name!r} takes {kinds[dims]}, but the data's examples have shape "
        f"{shape}: neither {kinds[2]} nor {kinds[3]}"
    )
  if data_dims != dims:
    raise ConfigError(
        f"model.name={name!r} is {dims}D but the data are {kinds[data_dims].split(' [')[0]} "
        f"{shape}; choose a {data_dims}D model: {_suggestions(data_dims)}"
    )


# The classifier head of each family: the last Dense layer, at the top of the params tree.
# FedPer and FedRep keep it per client unless --config.personal.layers names other layers.
_HEADS = (("vit_", r"^params/head/"), ("cnn", r"^params/Dense_1/"),
          ("resnet", r"^params/Dense_0/"), ("convnext_", r"^params/Dense_0/"))


def head_pattern(name: str) -> str:
  """A regular expression over ``/``-joined parameter paths matching ``name``'s classifier head.

  Raises:
    ConfigError: unknown name.
  """
  _check_name(name)
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
      ``"convnext_atto"``, 3D ``"cnn3d"``, ``"resnet18_3d"`` (see ``names()``).
    num_classes: output logits.
    conv_impl: ``"auto"``, ``"native"`` or ``"im2col"`` (``models.layers``).
    norm: ``""`` (the model's default) or one of ``NORMS``, for the names
      where ``takes_norm(name)``.
    **kwargs: extra module attributes (e.g. ``width=32``).

  Raises:
    ConfigError: unknown name, or a norm the model does not take.
  """
  _check_name(name)
  check_norm(name, norm)
  if takes_norm(name):
    kwargs["norm"] = norm or ("none" if name in _CNNS else DEFAULT_NORM)
  return _MODELS[name](num_classes=num_classes, conv_impl=conv_impl, **kwargs)
