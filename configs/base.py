"""Defaults for every run; experiment configs import this and change what differs.

Every field can be overridden on the command line, e.g.
  python launch/main.py --config=configs/base.py --workdir=runs/base \
      --config.fl.rounds=50 --config.data.name=breastmnist
"""

import ml_collections
from ml_collections import config_dict

from fedjax_med.algorithms import aggregators, registry


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.algorithm = ml_collections.ConfigDict()
  # Any name of fedjax_med/algorithms/registry.py (README "Algorithms"); "centralized"
  # pools the data on one model (needs fl.num_clients=1).
  c.algorithm.name = "fedavg"
  # Hyper-parameters nest per algorithm, with the registry's defaults:
  # --config.algorithm.fedprox.mu, --config.algorithm.fedasam.rho, ...
  for name, entry in registry.ENTRIES.items():
    if entry.hparams:
      c.algorithm[name] = ml_collections.ConfigDict({k: h.default for k, h in entry.hparams.items()})
  # Deprecated flat keys (one release): None = unset; when set they are moved to
  # their nested key with a warning (fedjax_med/config.py: DEPRECATED).
  for key in ("mu", "rho", "asam_eta", "feddyn_alpha", "server_eps"):
    c.algorithm[key] = config_dict.placeholder(float)
  c.algorithm.swa = False  # server SWA (any algorithm) with a cyclical server lr
  c.algorithm.swa_fraction = 0.25  # average over the last quarter of the rounds
  c.algorithm.swa_period = 1  # rounds per lr cycle / between averaged models
  c.algorithm.swa_lr_ratio = 0.1  # server lr at the end of a cycle, relative to fl.server_lr

  c.data = ml_collections.ConfigDict()
  c.data.name = "pneumoniamnist"  # any MedMNIST flag: 2D, chestmnist (multi-label), *mnist3d
  c.data.root = ""  # "" = $MEDMNIST_ROOT, else ~/.medmnist
  c.data.size = 28  # 28, 64, 128 or 224 (3D volumes: 28 or 64)
  c.data.download = True  # fetch the official file (MD5-checked) when absent
  c.data.verify_md5 = True
  c.data.augment = "none"  # none | shift | flip_shift (on device, training only)

  c.partition = ml_collections.ConfigDict()
  c.partition.kind = "dirichlet"  # iid | dirichlet | shards | quantity
  c.partition.alpha = 0.5  # Dirichlet concentration (smaller = more label skew)
  # per_client: Hsu et al. 2019, equal sizes, each client's class mix ~ Dir(alpha * p) around
  # the global class frequencies p, rebalanced so no class runs out (partition/dirichlet.py);
  # per_class: NIID-Bench, each class split over clients ~ Dir(alpha) (sizes vary).
  c.partition.dirichlet_method = "per_client"
  c.partition.min_size = 10  # minimum examples per client
  c.partition.shards_per_client = 2  # for kind=shards
  c.partition.quantity_kind = "lognormal"  # for kind=quantity: lognormal | power_law
  c.partition.quantity_sigma = 1.0
  c.partition.power_exponent = 1.5
  # Simulated site feature skew (fedjax_med/data/site_shift.py): each client's
  # training images get its own gamma / bias / blur / noise; 0 = off, 1 = strong.
  c.partition.site_shift = 0.0

  c.model = ml_collections.ConfigDict()
  c.model.name = ""  # "" = cnn (images) / cnn3d (volumes); see fedjax_med.models.names()
  c.model.conv_impl = "auto"  # auto | native | im2col
  # "" = the model's default; batch | group | layer | none for models that take
  # it (resnet8/14/18/20/50, resnet_tiny; default group), see models.takes_norm.
  c.model.norm = ""

  c.fl = ml_collections.ConfigDict()
  c.fl.rounds = 30
  c.fl.num_clients = 10
  c.fl.clients_per_round = 10
  c.fl.local_steps = 10  # S: optimizer steps per client per round
  # > 0: E local epochs instead (client c runs ceil(E n_c / B) real steps; S is
  # set from the largest client and smaller clients' extra steps are padding).
  c.fl.local_epochs = 0.0
  c.fl.batch_size = 32  # B: examples per local step
  # Client optimizer: sgd | momentum (heavy ball) | adamw (decoupled weight decay).
  c.fl.client_opt = "sgd"
  c.fl.client_lr = 0.05
  # None = 0.9 for client_opt=momentum, else 0 (sgd with momentum > 0 is heavy ball too).
  c.fl.client_momentum = config_dict.placeholder(float)
  c.fl.client_weight_decay = 0.0  # sgd/momentum: L2 on the gradient; adamw: decoupled
  # Client lr over the whole run: linear warmup over the first client_warmup_rounds
  # rounds, then constant | cosine (decays to client_lr * client_lr_min_ratio at the
  # last round). ViT and ConvNeXt want adamw with warmup + cosine.
  c.fl.client_lr_schedule = "constant"
  c.fl.client_warmup_rounds = 0
  c.fl.client_lr_min_ratio = 0.0
  # Server optimizer; None = the algorithm's registry default (fedavg: sgd, lr 1.0;
  # fedavgm: momentum 0.9; fedadam / fedyogi: lr 0.01; fedadagrad: lr 0.05).
  c.fl.server_opt = config_dict.placeholder(str)  # sgd | adam | yogi | adagrad
  c.fl.server_lr = config_dict.placeholder(float)
  c.fl.server_momentum = config_dict.placeholder(float)  # sgd: > 0 is FedAvgM
  c.fl.server_eps = config_dict.placeholder(float)  # adam / yogi / adagrad: tau of Reddi et al.
  # constant | cosine (decays to server_lr * server_lr_min_ratio at the last round)
  c.fl.server_lr_schedule = "constant"
  c.fl.server_lr_min_ratio = 0.1
  # Simulated unreliable clients (as FL-bench / FedScale), seeded by (seed, round, client id):
  # each sampled client fails to report with probability dropout_rate (weight 0, counted in
  # dropped_clients); straggler_fraction of the sampled clients run only straggler_steps of
  # the local steps.
  c.fl.dropout_rate = 0.0
  c.fl.straggler_fraction = 0.0
  c.fl.straggler_steps = 1
  # Execution engine (fedjax_med/engine.py): 0 = chosen per backend, logged.
  c.fl.client_chunk_size = 0  # clients vectorized together (>= clients_per_round: all)
  c.fl.local_unroll = 0  # lax.scan unroll of local steps

  # Aggregation of the client deltas (README "Robust aggregation"): mean (FedAvg, streamed
  # over chunks) | median | trimmed_mean | krum | multikrum | geometric_median | norm_bound.
  # The robust ones hold every client's delta at once (C x params x 4 bytes) and drop
  # clients whose delta is non-finite. Hyper-parameters (used by the aggregator that takes
  # them): trim_fraction (trimmed_mean beta in [0, 0.5)), num_byzantine (krum / multikrum f,
  # 2f + 2 < fl.clients_per_round), multikrum_m (0 = n - f), gm_iters and gm_nu
  # (geometric_median), norm_bound (L2 bound of every delta).
  c.aggregator = ml_collections.ConfigDict({"name": "mean", **aggregators.DEFAULTS})

  # Simulated malicious clients (README "Attacks"; fedjax_med/algorithms/attacks.py): a seeded
  # fixed set of round(fraction * fl.num_clients) clients. kind: none | label_flip (data
  # poisoning) | sign_flip | scaling | gaussian | alie | ipm (model poisoning: the round holds
  # the stacked deltas). scale: the kind's strength, 0 = its default (sign_flip 1, scaling 10,
  # gaussian std 1, alie z = Baruch et al.'s z_max, ipm eps 0.1; label_flip takes none).
  c.attack = ml_collections.ConfigDict({"kind": "none", "fraction": 0.0, "scale": 0.0})

  # Communication: compression of client uploads (fedjax_med/compression.py).
  c.comm = ml_collections.ConfigDict()
  c.comm.compressor = "none"  # none | quantize | topk | randk
  c.comm.bits = 8  # quantize: 1, 2, 4 or 8
  c.comm.block = 0  # quantize: values per scale (0 = one scale per tensor)
  c.comm.fraction = 0.01  # topk / randk: fraction of entries sent
  c.comm.error_feedback = False  # keep the unsent part per client (client store)
  c.comm.target_accuracy = 0.8  # summary: bytes uploaded until test accuracy >= this

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 5  # rounds between val/test evaluations (and always at the end)
  c.eval.batch_size = 500
  # Each site (client) keeps this seeded share of its own partition as its local test
  # set (not trained on); summary.json "sites" reports every site on it. 0 = off.
  c.eval.site_holdout = 0.2
  # summary.json "selected": the test metrics of the evaluation with the best value of
  # this validation metric (auc | balanced_accuracy | accuracy | loss), never test.
  c.eval.select_on = "auc"

  # Personalization (README "Personalization"). layers: a regular expression searched in
  # every parameter's "/"-joined path (e.g. "params/Dense_1/") naming the layers each client
  # keeps for itself, for the algorithms that keep layers (fedbn: default the BatchNorm
  # leaves; fedper / fedrep: default the model's classifier head); "" = the default.
  # finetune_steps > 0: after training, every site fine-tunes its model (its own, else the
  # global one) for that many local steps on its own training share at finetune_lr
  # (0 = fl.client_lr) before its held-out test: summary.json "sites_finetuned".
  c.personal = ml_collections.ConfigDict({"layers": "", "finetune_steps": 0,
                                          "finetune_lr": 0.0})

  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every = 10  # rounds between checkpoints (and always at the end)
  c.ckpt.keep = 2

  # Sharpness logged to metrics.jsonl ("split": "analysis") every N rounds; see README "Analysis".
  c.analysis = ml_collections.ConfigDict()
  c.analysis.every = 0  # 0 = off
  c.analysis.examples = 500  # fixed, seeded subset of analysis.split (eval mode)
  c.analysis.split = "train"
  c.analysis.batch_size = 250
  c.analysis.lanczos_iters = 20  # lambda_max (0 = off)
  c.analysis.lanczos_tol = 1e-3  # stop Lanczos early once lambda_max is stable (0 = never)
  c.analysis.probes = 20  # Hutchinson trace probes (0 = off)
  c.analysis.eps = 1e-3  # Keskar epsilon-sharpness (0 = off)
  c.analysis.m = 0  # m-sharpness batch size (0 = off)
  c.analysis.rho = 0.05

  # Differential privacy (README "Privacy"; needs the extra: pip install -e ".[privacy]").
  c.privacy = ml_collections.ConfigDict()
  # none | record (DP-SGD in every client: protects each patient record) |
  # client (DP-FedAvg: protects a whole site's contribution)
  c.privacy.level = "none"
  # Give one: the noise multiplier sigma, or a target epsilon for the planned run (the
  # noise is then calibrated before training and logged).
  c.privacy.noise_multiplier = config_dict.placeholder(float)
  c.privacy.epsilon = config_dict.placeholder(float)
  c.privacy.delta = 1e-5  # must be < 1 / (records of the largest client | number of clients)
  c.privacy.clip_norm = 1.0  # L2 bound of each example's gradient (record) / client delta (client)
  # client: adaptive clipping to this quantile of the update norms (Andrew et al. 2021);
  # None = fixed clip_norm. clip_lr: its geometric step; count_noise: std of the noise on the
  # count of unclipped clients (None = expected clients / 20).
  c.privacy.target_quantile = config_dict.placeholder(float)
  c.privacy.clip_lr = 0.2
  c.privacy.count_noise = config_dict.placeholder(float)
  # client: gaussian (independent noise every round) | banded_mf (BandMF correlated noise with
  # privacy.bands bands and cyclic Poisson sampling of the clients; needs bands *
  # clients_per_round <= num_clients)
  c.privacy.mechanism = "gaussian"
  c.privacy.bands = 4
  c.privacy.accountant = "rdp"  # rdp | pld (dp-accounting)
  # Stop (exit 0, recorded in summary.json) before the round that would exceed this epsilon.
  c.privacy.max_epsilon = config_dict.placeholder(float)

  c.log = ml_collections.ConfigDict()
  c.log.progress = "auto"  # auto (bar on a terminal) | bar | lines | none

  # JAX's persistent compilation cache (fedjax_med/compile_cache.py): a rerun or the next
  # run of a sweep with the same shapes loads the compiled round instead of compiling it.
  # "auto" = $FEDJAX_MED_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR, else
  # ~/.cache/fedjax_med/xla; a path; "" or "none" = off.
  c.compile_cache = "auto"

  # Many runs in one compiled round (README "Many runs in one jit"): seeds > 1 trains the
  # runs of seeds seed, ..., seed + seeds - 1 together, vmapped over a leading run axis,
  # each written to <workdir>/seed_<seed> exactly as a single run of that seed.
  c.runs = ml_collections.ConfigDict({"seeds": 1})
  return c


def apply(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """Sets dotted keys (``{"fl.rounds": 5}``) on ``config``; an unknown key is an error."""
  for key, value in overrides.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    if leaf not in node:
      raise KeyError(f"unknown config key {key!r}")
    node[leaf] = value
  return config
