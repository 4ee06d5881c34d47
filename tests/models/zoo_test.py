"""Model zoo: shapes of every registered model, and each family's tiny variant trains."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base as base_config
from fedjax_med import algorithms, errors, models, tasks, types
from fedjax_med import config as config_lib
from fedjax_med.data import synthetic
from fedjax_med.models import __main__ as zoo_cli
from fedjax_med.models import convnext, registry, resnet, vit

GRID = [(28, 28, 1), (28, 28, 3), (64, 64, 1), (64, 64, 3)]
GRID_3D = [(28, 28, 28, 1), (64, 64, 64, 1), (8, 8, 8, 1)]  # MedMNIST 3D: 1 channel


def init_with_output(model, shape, batch=2):
  """``jax.eval_shape`` of init + forward: shapes only, no compute."""
  key = jax.random.PRNGKey(0)
  x = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
  return jax.eval_shape(lambda x: model.init_with_output({"params": key, "dropout": key}, x), x)


def _shape_cases():
  # Every family's tiny variant on the full size x channels grid (its real forward and
  # backward run in the round test below); every other name at two corners of it.
  for name in models.names(spatial_dims=2):
    for shape in GRID if name in models.TEST_MODELS else GRID[::3]:
      yield pytest.param(name, shape, id=f"{name}-{shape[0]}px-{shape[2]}ch")
  for name in models.names(spatial_dims=3):
    for shape in GRID_3D if name in models.TEST_MODELS_3D else GRID_3D[:2]:
      yield pytest.param(name, shape, id=f"{name}-{shape[0]}cube")


@pytest.mark.parametrize("name,shape", list(_shape_cases()))
def test_every_registered_model_forward_shapes(name, shape):
  # Shapes do not depend on the conv lowering; the native one traces faster.
  impl = "auto" if name in {*models.TEST_MODELS, *models.TEST_MODELS_3D} else "native"
  logits, v = init_with_output(models.get_model(name, 3, conv_impl=impl), shape)
  assert logits.shape == (2, 3) and logits.dtype == jnp.float32
  assert set(v) == ({"params", "batch_stats"} if name.endswith("_bn") else {"params"})
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(v))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "convnext_tiny", "vit_ti"])
@pytest.mark.parametrize("size", [128, 224])
def test_large_inputs_use_imagenet_stems(name, size):
  _, v = init_with_output(models.get_model(name, 2, conv_impl="native"), (size, size, 3), 1)
  p = v["params"]
  if name.startswith("resnet"):
    assert p["Conv_0"]["kernel"].shape == (7, 7, 3, 64)
  elif name.startswith("convnext"):
    assert p["Conv_0"]["kernel"].shape == (4, 4, 3, 96)
  else:  # patch 16: 8x8 or 14x14 tokens
    assert p["pos_embedding"].shape == (1, (size // 16) ** 2, 192)
    assert p["embedding"]["kernel"].shape == (16 * 16 * 3, 192)


def test_small_inputs_keep_resolution_in_the_stem():
  p = init_with_output(models.get_model("resnet18", 2), (28, 28, 1))[1]["params"]
  assert p["Conv_0"]["kernel"].shape == (3, 3, 1, 64)
  p = init_with_output(models.get_model("convnext_atto", 2), (28, 28, 1))[1]["params"]
  assert p["Conv_0"]["kernel"].shape == (2, 2, 1, 40)
  # Stages at 14, 7, 4, 2 px: the depthwise kernel is cropped to 3x3 on the 2 px maps only.
  assert p["Block_0"]["Conv_0"]["kernel"].shape == (7, 7, 1, 40)
  assert p["Block_11"]["Conv_0"]["kernel"].shape == (3, 3, 1, 320)
  p = init_with_output(models.get_model("vit_s", 2), (28, 28, 1))[1]["params"]
  assert p["pos_embedding"].shape == (1, 49, 384)


def test_vit_variants_and_pooling():
  assert vit.decode_variant("Ti/16") == {
      "width": 192, "depth": 12, "mlp_dim": 768, "num_heads": 3, "patch_size": 16}
  assert vit.decode_variant("S")["num_heads"] == 6
  with pytest.raises(ValueError, match="variant"):
    vit.decode_variant("XL/7")
  model = models.get_model("vit_mu", 4, pool="tok", patch_size=7)
  logits, v = init_with_output(model, (28, 28, 1))
  assert logits.shape == (2, 4) and v["params"]["pos_embedding"].shape == (1, 16, 32)
  assert v["params"]["cls"].shape == (1, 1, 32)


def test_model_norm_choice():
  for norm, collections in [("batch", {"params", "batch_stats"}), ("layer", {"params"}),
                            ("none", {"params"}), ("", {"params"})]:
    v = init_with_output(models.get_model("resnet_tiny", 2, norm=norm), (8, 8, 1))[1]
    assert set(v) == collections
  assert models.get_model("resnet18", 2).norm == "group"
  assert models.takes_norm("resnet50") and not models.takes_norm("resnet8_gn")
  with pytest.raises(errors.ConfigError, match="fixes its normalization"):
    models.get_model("vit_ti", 2, norm="batch")
  with pytest.raises(errors.ConfigError, match="fixes its normalization"):
    models.get_model("resnet8_gn", 2, norm="batch")
  with pytest.raises(errors.ConfigError, match="model.norm"):
    models.get_model("resnet8", 2, norm="instance")
  c = base_config.get_config()
  c.model.name, c.model.norm = "convnext_atto", "group"
  with pytest.raises(errors.ConfigError, match="model.norm"):  # caught before any work
    config_lib.validate(c)


def test_3d_models_take_volumes_and_model_norm():
  assert models.names(spatial_dims=3) == ["cnn3d", "cnn3d_tiny", "resnet18_3d", "resnet3d_tiny"]
  assert not set(models.names(spatial_dims=3)) & set(models.names(spatial_dims=2))
  assert all(models.spatial_dims(n) == 3 for n in models.names(spatial_dims=3))
  assert models.spatial_dims("resnet18") == 2
  assert models.takes_norm("resnet18_3d")
  assert models.get_model("resnet18_3d", 2).norm == "group"
  # The MedMNIST v2 baseline: ResNet-18 with cubic kernels and a 3x3x3 stride-1 stem at 28^3.
  p = init_with_output(models.get_model("resnet18_3d", 2), (28, 28, 28, 1), 1)[1]["params"]
  assert p["Conv_0"]["kernel"].shape == (3, 3, 3, 1, 64)
  assert p["BasicBlock_7"]["Conv_1"]["kernel"].shape == (3, 3, 3, 512, 512)
  p = init_with_output(models.get_model("cnn3d", 2), (28, 28, 28, 1), 1)[1]["params"]
  assert p["Conv_0"]["kernel"].shape == (3, 3, 3, 1, 16)  # stride 2: 28 -> 14 -> 7 -> 4
  assert p["Dense_0"]["kernel"].shape == (4 * 4 * 4 * 64, 64)


@pytest.mark.parametrize("name", models.names(spatial_dims=3))
def test_3d_head_pattern_is_exactly_the_last_dense(name):
  """FedPer/FedRep's head: the kernel and bias of the top-level Dense applied last, nothing else."""
  p = init_with_output(models.get_model(name, 5, norm="batch" if models.takes_norm(name) else ""),
                       (8, 8, 8, 1))[1]
  paths = ["/".join(str(k.key) for k in path)
           for path, _ in jax.tree_util.tree_flatten_with_path(p)[0]]
  head = re.compile(models.head_pattern(name))
  last = max((k for k in p["params"] if k.startswith("Dense_")), key=lambda k: int(k[6:]))
  assert sorted(x for x in paths if head.search(x)) == [f"params/{last}/bias",
                                                        f"params/{last}/kernel"]
  assert p["params"][last]["kernel"].shape[-1] == 5


@pytest.mark.parametrize("norm", ["batch", "group", "layer", "none"])
def test_tiny_3d_resnet_runs_with_each_norm(norm):
  """A real forward (train and eval) on 6^3 volumes: [B, classes] logits; stats only for BN."""
  model = models.get_model("resnet3d_tiny", 3, norm=norm)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 6, 6, 6, 1))
  mask = jnp.array([True, True, True, False])

  @jax.jit
  def run(x):
    v = model.init(jax.random.PRNGKey(0), x)
    train, _ = model.apply(v, x, train=True, mask=mask, mutable=["batch_stats"])
    return v, train, model.apply(v, x, train=False)

  v, train, ev = run(x)
  assert set(v) == ({"params", "batch_stats"} if norm == "batch" else {"params"})
  assert train.shape == ev.shape == (4, 3)
  assert bool(jnp.all(jnp.isfinite(train))) and bool(jnp.all(jnp.isfinite(ev)))


def test_batchnorm_statistics_update_in_train_mode_only():
  model = models.get_model("resnet_tiny", 2, norm="batch")

  @jax.jit
  def init_and_stats(x):
    v = model.init(jax.random.PRNGKey(0), x)
    after = [model.apply(v, x, train=t, mutable=["batch_stats"])[1]["batch_stats"]
             for t in (True, False)]
    return v["batch_stats"], *after

  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1)) * 3.0 + 1.0
  before, after_train, after_eval = init_and_stats(x)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after_train)
  assert all(jax.tree.leaves(changed))  # every mean and var moved towards the batch's
  chex.assert_trees_all_equal(after_eval, before)


def test_convnext_drop_path_uses_the_dropout_rng_in_training_only():
  model = models.get_model("convnext_mu", 2, drop_path_rate=0.5, layer_scale_init=1.0)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 28, 28, 1))

  @jax.jit
  def train_and_eval(key):
    v = model.init(jax.random.PRNGKey(0), x)  # eval-mode init: needs no dropout rng
    return model.apply(v, x, train=True, rngs={"dropout": key}), model.apply(v, x)

  (a, ev), (b, _), (c, _) = (train_and_eval(jax.random.PRNGKey(i)) for i in (0, 0, 1))
  chex.assert_trees_all_equal(a, b)  # deterministic given the key
  assert bool(jnp.any(a != c)) and bool(jnp.any(a != ev))
  keep = convnext.drop_path(jnp.ones((4000, 1)), 0.25, jax.random.PRNGKey(0))
  np.testing.assert_allclose(np.unique(keep), [0.0, 1 / 0.75], rtol=1e-6)
  assert abs(float(jnp.mean(keep)) - 1.0) < 0.05  # unbiased: E[keep] = 1


def make_clients(name, ds, c=2, s=1, b=2) -> types.ClientBatch:
  n = c * s * b
  image = ds.train.images[:n].reshape(c, s, b, *ds.image_shape)
  label = ds.train.labels[:n].reshape(c, s, b).astype(np.int32)
  return types.ClientBatch(image, label, np.ones((c, s, b), bool), np.full(c, b * s, np.float32),
                           np.arange(c, dtype=np.int32))


# ViT and ConvNeXt compile for seconds: in the full suite only (pytest -m slow).
_LEARN = [pytest.param(n, marks=pytest.mark.slow) if n.startswith(("vit", "convnext")) else n
          for n in [*models.TEST_MODELS, "resnet_tiny_bn"]]


def _six_rounds_that_learn(alg, state, clients):
  """Six jitted rounds on the same clients (one trace): finite losses that fall; the state."""
  chex.clear_trace_counter()  # every parametrization builds its own round_fn
  round_fn = jax.jit(chex.assert_max_traces(alg.round, n=1))
  losses = []
  for _ in range(6):
    state, metrics = round_fn(state, clients)
    losses.append(float(jnp.mean(metrics.client_loss)))
  assert np.all(np.isfinite(losses)) and int(state.round) == 6
  assert losses[-1] < 0.99 * losses[0], losses  # same examples each round: must fall
  return state


@pytest.mark.parametrize("name", _LEARN)
def test_tiny_variant_learns_inside_the_vmapped_fedavg_round(name):
  """C=2 clients, S=1 step, B=2: the round compiles once and the loss on these examples falls."""
  ds = synthetic.make_dataset("pathmnist", 28, n_train=4, n_val=0, n_test=0, seed=0)
  model = models.get_model(name, ds.num_classes)
  alg = algorithms.fedavg(tasks.make_loss_fn(model), optax.adam(3e-3), optax.sgd(1.0))
  state = alg.init(jax.jit(tasks.init_variables, static_argnums=(0, 2))(
      model, jax.random.PRNGKey(0), ds.image_shape), jax.random.PRNGKey(1))
  clients = make_clients(name, ds)
  state = _six_rounds_that_learn(alg, state, clients)
  if name.endswith("_bn"):
    assert "batch_stats" in state.params


def make_volumes(n: int, side: int, num_classes: int = 2, seed: int = 0):
  """uint8 volumes [n, side, side, side, 1]: class c is noise around a bright octant c."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % num_classes
  x = rng.normal(64.0, 16.0, (n, side, side, side, 1))
  h = side // 2
  for i, c in enumerate(labels):
    x[i, h * (c % 2):h * (c % 2) + h, :h, :h] += 128.0
  return np.clip(x, 0, 255).astype(np.uint8), labels.astype(np.int32)


@pytest.mark.parametrize("name,norm", [("cnn3d_tiny", ""), ("resnet3d_tiny", ""),
                                       pytest.param("resnet3d_tiny", "batch", marks=pytest.mark.slow)])
def test_tiny_3d_variant_learns_inside_the_vmapped_fedavg_round(name, norm):
  """As the 2D test: C=2 clients, S=1 step, B=2 volumes of 8^3; one trace, the loss falls."""
  images, labels = make_volumes(4, 8)
  model = models.get_model(name, 2, norm=norm)
  alg = algorithms.fedavg(tasks.make_loss_fn(model), optax.adam(1e-2), optax.sgd(1.0))
  state = alg.init(jax.jit(tasks.init_variables, static_argnums=(0, 2))(
      model, jax.random.PRNGKey(0), (8, 8, 8, 1)), jax.random.PRNGKey(1))
  clients = types.ClientBatch(images.reshape(2, 1, 2, 8, 8, 8, 1), labels.reshape(2, 1, 2),
                              np.ones((2, 1, 2), bool), np.full(2, 2.0, np.float32),
                              np.arange(2, dtype=np.int32))
  state = _six_rounds_that_learn(alg, state, clients)
  assert ("batch_stats" in state.params) == (norm == "batch")


def test_zoo_table_cli(capsys):
  zoo_cli.main(["--size", "28", "--names", "cnn_tiny,resnet_tiny,vit_mu"])
  out = capsys.readouterr().out
  assert "--config.model.name" in out
  row = next(line for line in out.splitlines() if line.startswith("| vit_mu "))
  params = int(row.split("|")[3].replace(",", ""))
  v = init_with_output(models.get_model("vit_mu", 2), (28, 28, 1))[1]
  assert params == sum(x.size for x in jax.tree.leaves(v["params"]))
  assert float(row.split("|")[4].replace(",", "")) > 0


def test_zoo_table_cli_lists_3d_models_with_depth(capsys):
  zoo_cli.main(["--size", "8", "--depth", "8", "--names", "cnn3d_tiny,resnet3d_tiny"])
  out = capsys.readouterr().out
  assert out.splitlines()[0].startswith("input 8x8x8x1")
  for name in ("cnn3d_tiny", "resnet3d_tiny"):
    row = next(line for line in out.splitlines() if line.startswith(f"| {name} "))
    v = init_with_output(models.get_model(name, 2), (8, 8, 8, 1))[1]
    assert int(row.split("|")[3].replace(",", "")) == sum(
        x.size for x in jax.tree.leaves(v["params"]))
  # (tiny nets print 0.0 MFLOPs at one decimal; the count itself is positive)
  rows = zoo_cli.zoo_rows(["cnn3d_tiny"], 8, 1, 2, "native", depth=8)
  assert next(rows)[3] > 0
  # Without --names: the 3D models with --depth, the 2D ones (as before) without.
  assert zoo_cli.selected_names("", depth=8) == models.names(spatial_dims=3)
  assert zoo_cli.selected_names("", depth=0) == models.names(spatial_dims=2)
  with pytest.raises(SystemExit):  # a 2D model on volumes: an argparse error naming 3D models
    zoo_cli.main(["--size", "8", "--depth", "8", "--names", "cnn_tiny"])
  assert "choose a 3D model: cnn3d, resnet18_3d" in capsys.readouterr().err


def test_registry_constants_cover_each_family():
  fams = [registry._MODELS[n].func for n in models.TEST_MODELS]
  assert fams == [models.cnn.CNN, resnet.ResNet, vit.ViT, convnext.ConvNeXt]
  fams = [registry._MODELS[n].func for n in models.TEST_MODELS_3D]
  assert fams == [models.cnn.CNN, resnet.ResNet]
  assert all(registry._MODELS[n].keywords["spatial_dims"] == 3 for n in models.TEST_MODELS_3D)
