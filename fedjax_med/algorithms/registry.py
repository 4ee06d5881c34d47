"""The algorithm registry: one entry per name, read by every other place.

Config validation, config defaults (``configs/base.py`` builds
``config.algorithm.<name>.*`` from the entries' hyper-parameters), the
experiment builder, the benchmarks and the studies all look names up here.
Aliases (``fedavgm``, ``fedadam``, ``fedyogi``, ``fedadagrad``, ``fedasam``)
are entries of their own: the same builder with fixed arguments and their own
server-optimizer defaults.

Every builder has the shape ``builder(loss_fn, client_optimizer,
server_optimizer, *, <hyper-parameters>, plan)`` (``algorithms.base.RoundPlan``).
Adding an algorithm: one module with its builder, one :class:`Entry` line in
``ENTRIES``, one reference-loop test.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import optax

from fedjax_med import types
from fedjax_med.algorithms import base
from fedjax_med.algorithms.apfl import apfl
from fedjax_med.algorithms.centralized import centralized
from fedjax_med.algorithms.ditto import ditto
from fedjax_med.algorithms.fedavg import fedavg
from fedjax_med.algorithms.fedbn import fedbn
from fedjax_med.algorithms.feddyn import feddyn
from fedjax_med.algorithms.fedexp import fedexp
from fedjax_med.algorithms.fedper import fedper
from fedjax_med.algorithms.fedprox import fedprox
from fedjax_med.algorithms.fedrep import fedrep
from fedjax_med.algorithms.fedsam import fedsam
from fedjax_med.algorithms.local_baseline import local_baseline
from fedjax_med.algorithms.scaffold import scaffold


@dataclasses.dataclass(frozen=True)
class HParam:
  """One hyper-parameter: its default and its valid range (``> minimum`` if ``strict``)."""

  default: float
  doc: str
  minimum: float = 0.0
  strict: bool = False
  maximum: float = math.inf

  def check(self, value) -> str | None:
    """``None`` if ``value`` is valid, else what is wrong."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > self.minimum if self.strict else value >= self.minimum) and (
        value <= self.maximum):
      return None
    upper = "" if math.isinf(self.maximum) else f" and <= {self.maximum:g}"
    return f"must be a finite number {'>' if self.strict else '>='} {self.minimum:g}{upper}"


@dataclasses.dataclass(frozen=True)
class ServerDefaults:
  """The server optimizer an algorithm trains with unless the config says otherwise.

  ``opt``: ``sgd`` | ``adam`` | ``yogi`` | ``adagrad``; ``eps`` is tau of Reddi et al.
  """

  opt: str = "sgd"
  lr: float = 1.0
  momentum: float = 0.0
  eps: float = 1e-3


def _params(**kw) -> Mapping[str, HParam]:
  return MappingProxyType(kw)


@dataclasses.dataclass(frozen=True)
class Entry:
  """A registered algorithm.

  Attributes:
    builder: ``builder(loss_fn, client_optimizer, server_optimizer, *, **hparams, plan)``.
    summary: one line for tables and ``--help``.
    hparams: tunable hyper-parameters (``config.algorithm.<name>.<key>``).
    fixed: builder arguments the entry fixes (``fedasam``: ``adaptive=True``).
    server: server-optimizer defaults.
    server_opt_fixed: the name fixes the server optimizer (``fedadam`` is Adam).
    stateful: keeps a state row per client (needs ``plan.num_clients``).
    federated: False for the centralized baseline (one pooled "client").
    communicates: False for the baselines that send nothing (bytes are 0).
    extra_uploads: model-sized float32 payloads a client uploads besides its
      (compressed) delta (SCAFFOLD: its control-variate change), counted in bytes.
    takes_client_lr: the builder needs the client learning rate (SCAFFOLD's option II).
    plain_sgd: the method assumes plain local SGD (no momentum or weight decay).
    personal: the algorithm keeps some layers per client and takes ``is_local``
      (``--config.personal.layers``): ``"batchnorm"`` (FedBN: they default to
      the BatchNorm leaves) or ``"head"`` (FedPer, FedRep: the model's classifier
      head, ``models.head_pattern``); ``""`` = it takes no layer choice.
    privacy: the differential-privacy levels it supports (``privacy.level``):
      ``"record"`` (DP-SGD in every client: its local step is a gradient of the
      loss) and ``"client"`` (DP-FedAvg: the server only sums clipped deltas).
  """

  builder: Callable[..., types.FederatedAlgorithm]
  summary: str
  hparams: Mapping[str, HParam] = dataclasses.field(default_factory=dict)
  fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  server: ServerDefaults = ServerDefaults()
  server_opt_fixed: bool = False
  stateful: bool = False
  federated: bool = True
  communicates: bool = True
  extra_uploads: int = 0
  takes_client_lr: bool = False
  plain_sgd: bool = False
  personal: str = ""
  privacy: tuple[str, ...] = ()


_SAM_RHO = "SAM radius rho"
_DP = ("record", "client")
ENTRIES: Mapping[str, Entry] = MappingProxyType({
    "fedavg": Entry(fedavg, "FedAvg (McMahan et al. 2017); any server optimizer via fl.server_opt",
                    privacy=_DP),
    "fedavgm": Entry(fedavg, "FedAvg with server momentum (Hsu et al. 2019)",
                     server=ServerDefaults("sgd", 1.0, 0.9), server_opt_fixed=True,
                     privacy=_DP),
    "fedadam": Entry(fedavg, "FedAdam (Reddi et al. 2021)", server=ServerDefaults("adam", 0.01),
                     server_opt_fixed=True, privacy=_DP),
    "fedyogi": Entry(fedavg, "FedYogi (Reddi et al. 2021)", server=ServerDefaults("yogi", 0.01),
                     server_opt_fixed=True, privacy=_DP),
    "fedadagrad": Entry(fedavg, "FedAdagrad (Reddi et al. 2021)",
                        server=ServerDefaults("adagrad", 0.05), server_opt_fixed=True,
                        privacy=_DP),
    "fedprox": Entry(fedprox, "FedProx: proximal term (mu/2) squared distance to the server model (Li et al. 2020)",
                     hparams=_params(mu=HParam(0.01, "proximal strength")), privacy=_DP),
    "fedsam": Entry(fedsam, "FedSAM: sharpness-aware local steps (Qu et al. 2022)",
                    hparams=_params(rho=HParam(0.05, _SAM_RHO)), privacy=("client",)),
    "fedasam": Entry(fedsam, "FedASAM: adaptive SAM local steps (Caldarola et al. 2022)",
                     hparams=_params(rho=HParam(0.5, _SAM_RHO),
                                     eta=HParam(0.01, "ASAM offset: T = |w| + eta")),
                     fixed=MappingProxyType({"adaptive": True}), privacy=("client",)),
    "fedexp": Entry(fedexp, "FedExP: server step extrapolated from client disagreement "
                    "(Jhunjhunwala et al. 2023)",
                    hparams=_params(eps=HParam(1e-3, "step-size damping", strict=True)),
                    privacy=("record",)),
    "scaffold": Entry(scaffold, "SCAFFOLD, option II control variates (Karimireddy et al. 2020)",
                      stateful=True, takes_client_lr=True, plain_sgd=True, extra_uploads=1),
    "feddyn": Entry(feddyn, "FedDyn: dynamic regularization (Acar et al. 2021)",
                    hparams=_params(alpha=HParam(0.01, "regularization", strict=True)),
                    stateful=True),
    "fedbn": Entry(fedbn, "FedBN: BatchNorm layers stay local (Li et al. 2021)", stateful=True,
                   personal="batchnorm"),
    "fedper": Entry(fedper, "FedPer: personal classifier head, shared body (Arivazhagan et al. 2019)",
                    stateful=True, personal="head"),
    "fedrep": Entry(fedrep, "FedRep: personal head trained first, then the shared body "
                    "(Collins et al. 2021)",
                    hparams=_params(head_fraction=HParam(
                        0.5, "share of the local steps that train the head", maximum=1.0)),
                    stateful=True, personal="head"),
    "ditto": Entry(ditto, "Ditto: personal models pulled towards the global one (Li et al. 2021)",
                   hparams=_params(lam=HParam(0.1, "proximal strength of the personal model")),
                   stateful=True),
    "apfl": Entry(apfl, "APFL: learned mix of a local and the global model (Deng et al. 2020)",
                  hparams=_params(alpha=HParam(0.25, "initial weight of the local model",
                                               maximum=1.0),
                                  alpha_lr=HParam(0.01, "learning rate of the mixing weight "
                                                  "(0 = fixed)")),
                  stateful=True),
    "local": Entry(local_baseline, "every site trains alone on its own data: the baseline",
                   stateful=True, communicates=False, privacy=("record",)),
    "centralized": Entry(centralized, "pooled training on one model: the baseline",
                         federated=False, communicates=False, privacy=("record",)),
})


def names() -> tuple[str, ...]:
  """Every registered name, in registry order."""
  return tuple(ENTRIES)


def get(name: str) -> Entry:
  """The entry for ``name``.

  Raises:
    ValueError: unknown name (the message lists the registered ones).
  """
  if name not in ENTRIES:
    raise ValueError(f"unknown algorithm {name!r}; choose one of {list(ENTRIES)}")
  return ENTRIES[name]


def defaults(name: str) -> dict[str, float]:
  """``{hyper-parameter: default}`` of ``name``."""
  return {k: h.default for k, h in get(name).hparams.items()}


def build(
    name: str,
    loss_fn: types.LossFn,
    client_optimizer: optax.GradientTransformation,
    server_optimizer: optax.GradientTransformation,
    *,
    plan: base.RoundPlan = base.RoundPlan(),
    client_lr: float | None = None,
    is_local: Callable | None = None,
    **hparams,
) -> types.FederatedAlgorithm:
  """Builds ``name`` with its defaults, overridden by ``hparams``.

  Args:
    client_lr: the client learning rate, for entries with ``takes_client_lr``.
    is_local: ``is_local(path) -> bool``, the personal layers of entries with
      ``personal`` (FedBN defaults to the BatchNorm leaves; FedPer and FedRep
      need it: ``personal.matcher(models.head_pattern(model_name))``).

  Raises:
    ValueError: unknown name, unknown or invalid hyper-parameter, a missing
      ``client_lr`` or ``is_local``, or ``is_local`` for an entry without personal layers.
  """
  entry = get(name)
  if is_local is not None and not entry.personal:
    raise ValueError(f"{name} keeps no personal layers; is_local applies to "
                     f"{[n for n, e in ENTRIES.items() if e.personal]}")
  if entry.personal == "head" and is_local is None:
    raise ValueError(f"{name} needs is_local (its personal layers, e.g. "
                     "personal.matcher(models.head_pattern(model_name)))")
  unknown = set(hparams) - set(entry.hparams)
  if unknown:
    raise ValueError(f"{name} has no hyper-parameter {sorted(unknown)}; it takes "
                     f"{sorted(entry.hparams) or 'none'}")
  kwargs = {**defaults(name), **hparams}
  for key, value in kwargs.items():
    problem = entry.hparams[key].check(value)
    if problem:
      raise ValueError(f"{name}.{key}={value!r}: {problem}")
  if entry.takes_client_lr:
    if client_lr is None:
      raise ValueError(f"{name} needs client_lr (the local SGD learning rate)")
    kwargs["client_lr"] = client_lr
  if is_local is not None:
    kwargs["is_local"] = is_local
  return entry.builder(loss_fn, client_optimizer, server_optimizer, plan=plan, **kwargs,
                       **entry.fixed)
