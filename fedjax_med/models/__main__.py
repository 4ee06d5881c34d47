"""Prints the model zoo: ``--config.model.name``, parameters and FLOPs per example.

  python -m fedjax_med.models --size 28 --channels 1 --classes 2
  python -m fedjax_med.models --size 28 --depth 28   # the 3D models, on 28^3 volumes

FLOPs are XLA's count (``cost_analysis()["flops"]``) of one eval-mode forward
pass on a single example, with the native conv lowering by default (im2col
adds the patch copies, not multiplies); a multiply-add counts as 2 FLOPs.
Nothing is run: parameters come from ``jax.eval_shape`` and FLOPs from a
compiled but never executed function.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from fedjax_med import errors
from fedjax_med.models import cnn, layers, registry


def count_params(variables) -> int:
  """Number of trainable scalars (the ``params`` collection)."""
  return sum(math.prod(v.shape) for v in jax.tree.leaves(variables["params"]))


def flops_per_example(model, variables, image_shape) -> float:
  """XLA's FLOP count of one eval forward pass on a [1, *image_shape] input."""
  x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  cost = apply.lower(variables, x).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def zoo_rows(names: Sequence[str], size: int, channels: int, classes: int, conv_impl: str,
             depth: int = 0):
  """Yields ``(name, norm, params, flops)`` per model (norm: its default normalization).

  ``depth`` > 0: the models get volumes ``[depth, size, size, channels]`` (3D models).
  """
  shape = (depth, size, size, channels) if depth else (size, size, channels)
  key = jax.random.PRNGKey(0)
  for name in names:
    model = registry.get_model(name, classes, conv_impl=conv_impl)
    variables = jax.eval_shape(
        lambda k, m=model: m.init({"params": k, "dropout": k}, jnp.zeros((1, *shape))), key
    )
    norm = "none" if isinstance(model, cnn.CNN) else getattr(model, "norm", "layer")
    if registry.takes_norm(name):
      norm += " (model.norm)"
    yield name, norm, count_params(variables), flops_per_example(model, variables, shape)


def selected_names(names: str, depth: int) -> list[str]:
  """The comma list ``names``, or else every 3D model if ``depth`` else every 2D one."""
  return names.split(",") if names else registry.names(spatial_dims=3 if depth else 2)


def main(argv: Sequence[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m fedjax_med.models", description=__doc__.split("\n")[0])
  p.add_argument("--size", type=int, default=28, help="input side in pixels")
  p.add_argument("--depth", type=int, default=0,
                 help="volume depth: list the 3D models on [depth, size, size] volumes")
  p.add_argument("--channels", type=int, default=1, help="input channels")
  p.add_argument("--classes", type=int, default=2, help="output classes")
  p.add_argument("--names", default="",
                 help="comma list of models (default: all 2D ones; all 3D ones with --depth)")
  p.add_argument("--conv-impl", default="native", choices=layers.IMPLS)
  args = p.parse_args(argv)
  names = selected_names(args.names, args.depth)
  shape = [args.depth] * bool(args.depth) + [args.size, args.size, args.channels]
  try:
    for name in names:
      registry.check_input(name, shape)
  except errors.ConfigError as e:
    p.error(str(e))
  print(f"input {'x'.join(map(str, shape))}, {args.classes} classes, conv_impl={args.conv_impl}")
  print(f"| {'--config.model.name':<20} | {'norm':<18} | {'params':>12} | {'MFLOPs/example':>14} |")
  print(f"|{'-' * 22}|{'-' * 20}|{'-' * 13}:|{'-' * 15}:|")
  for name, norm, n, flops in zoo_rows(names, args.size, args.channels, args.classes,
                                      args.conv_impl, args.depth):
    print(f"| {name:<20} | {norm:<18} | {n:>12,} | {flops / 1e6:>14,.1f} |", flush=True)


if __name__ == "__main__":
  main()
