"""Vision Transformer (ViT) for 28-224 px inputs.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; sizes and the
variant strings (``"Ti/16"``, ``"S"``) follow big_vision ``models/vit.py``
(``decode_variant``), as do the defaults of Beyer et al., "Better plain ViT
baselines for ImageNet-1k" (2022): global average pooling (``pool="gap"``),
zero-initialized head.

**Patch size, by input size at call time** (``patch_size=0``): 4 up to 32 px
(28 px -> 7x7 = 49 tokens), 8 up to 64 px (64 tokens), 16 above (128 px -> 64
tokens, 224 px -> 196). Patches are cut by reshape + one ``Dense`` (the same
function as a stride-``patch`` VALID conv, but a plain matmul under ``vmap``);
pixels beyond a multiple of the patch size are dropped, as that conv would.
The learned position embeddings are sized from the input at init, so a model
initialized at one size runs at that size only.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

POOLS = ("gap", "tok")

_WIDTH = {"mu": 32, "xs": 64, "Ti": 192, "S": 384, "M": 512, "B": 768}
_DEPTH = {"mu": 1, "xs": 4, "Ti": 12, "S": 12, "M": 12, "B": 12}
_MLP_DIM = {"mu": 128, "xs": 256, "Ti": 768, "S": 1536, "M": 2048, "B": 3072}
_HEADS = {"mu": 2, "xs": 2, "Ti": 3, "S": 6, "M": 8, "B": 12}


def decode_variant(variant: str) -> dict:
  """``"Ti/16"`` -> ``ViT`` attributes (width, depth, mlp_dim, num_heads[, patch_size]).

  Args:
    variant: ``"<size>"`` or ``"<size>/<patch>"``, size in
      ``mu, xs, Ti, S, M, B`` (``mu`` is a one-layer test model; ``xs`` a 4-layer,
      64-wide ViT sized like ResNet-8 for CPU studies).

  Raises:
    ValueError: unknown size or malformed string.
  """
  size, _, patch = variant.partition("/")
  if size not in _WIDTH or (patch and not patch.isdigit()):
    raise ValueError(f"ViT variant must be one of {sorted(_WIDTH)}[/patch], got {variant!r}")
  out = {
      "width": _WIDTH[size],
      "depth": _DEPTH[size],
      "mlp_dim": _MLP_DIM[size],
      "num_heads": _HEADS[size],
  }
  if patch:
    out["patch_size"] = int(patch)
  return out


def auto_patch_size(size: int) -> int:
  """Patch side for an input side: 4 (<= 32 px), 8 (<= 64 px), else 16."""
  return 4 if size <= 32 else 8 if size <= 64 else 16


class MlpBlock(nn.Module):
  mlp_dim: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    dense = functools.partial(
        nn.Dense, kernel_init=nn.initializers.xavier_uniform(),
        bias_init=nn.initializers.normal(stddev=1e-6),
    )
    y = nn.gelu(dense(self.mlp_dim)(x))
    y = nn.Dropout(self.dropout)(y, deterministic=not train)
    return dense(x.shape[-1])(y)


class EncoderBlock(nn.Module):
  """Pre-LayerNorm self-attention + MLP, each with a residual."""

  mlp_dim: int
  num_heads: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # [B, N, D]
    y = nn.LayerNorm()(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform()
    )(y, y)
    x = x + nn.Dropout(self.dropout)(y, deterministic=not train)
    y = MlpBlock(self.mlp_dim, self.dropout)(nn.LayerNorm()(x), train)
    return x + nn.Dropout(self.dropout)(y, deterministic=not train)


class ViT(nn.Module):
  """Vision Transformer classifier.

  Attributes:
    num_classes: output logits.
    width: token dimension D.
    depth: encoder blocks.
    mlp_dim: hidden width of each MLP.
    num_heads: attention heads.
    patch_size: patch side; 0 = ``auto_patch_size`` of the input.
    pool: ``"gap"`` (mean of the tokens) or ``"tok"`` (a class token).
    dropout: dropout rate (rng stream ``"dropout"``, training only).
    conv_impl: accepted for a uniform ``get_model``; unused (no convs).
  """

  num_classes: int
  width: int = 192
  depth: int = 12
  mlp_dim: int = 768
  num_heads: int = 3
  patch_size: int = 0
  pool: str = "gap"
  dropout: float = 0.0
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, mask: jax.Array | None = None):
    """[B, H, W, C] -> logits [B, num_classes]; ``mask`` is unused (no batch statistics)."""
    del mask
    if self.pool not in POOLS:
      raise ValueError(f"pool must be one of {POOLS}, got {self.pool!r}")
    b, h, w, c = x.shape
    p = self.patch_size or auto_patch_size(min(h, w))
    hp, wp = h // p, w // p
    if hp == 0 or wp == 0:
      raise ValueError(f"patch size {p} is larger than the {h}x{w} input")
    x = x[:, : hp * p, : wp * p].reshape(b, hp, p, wp, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = nn.Dense(self.width, name="embedding")(x.reshape(b, hp * wp, p * p * c))  # [B, N, D]
    pos = self.param(
        "pos_embedding",
        nn.initializers.normal(stddev=1 / math.sqrt(self.width)),
        (1, hp * wp, self.width),
    )
    x = x + pos
    if self.pool == "tok":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, self.width)), x], axis=1)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    for i in range(self.depth):
      x = EncoderBlock(self.mlp_dim, self.num_heads, self.dropout, name=f"encoderblock_{i}")(
          x, train
      )
    x = nn.LayerNorm(name="encoder_norm")(x)
    x = x[:, 0] if self.pool == "tok" else jnp.mean(x, axis=1)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)


ViTTi = functools.partial(ViT, **decode_variant("Ti"))
ViTS = functools.partial(ViT, **decode_variant("S"))
ViTXS = functools.partial(ViT, **decode_variant("xs"))
_ViTMu = functools.partial(ViT, **decode_variant("mu"))
