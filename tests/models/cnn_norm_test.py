"""The CNN's optional normalization (``model.norm``): none by default, BatchNorm for FedBN."""

import jax
import jax.numpy as jnp
import numpy as np

from fedjax_med import models, tasks


def _variables(norm):
  model = models.get_model("cnn_tiny", 2, norm=norm)
  return model, tasks.init_variables(model, jax.random.PRNGKey(0), (8, 8, 1))


def test_default_is_the_plain_cnn():
  assert models.registry.takes_norm("cnn") and models.registry.takes_norm("cnn3d")
  _, plain = _variables("")
  _, none = _variables("none")
  assert set(plain) == {"params"}
  assert jax.tree.map(jnp.shape, plain) == jax.tree.map(jnp.shape, none)
  assert not any("Norm" in k for k in plain["params"])


def test_batch_norm_after_every_conv_and_padding_left_out():
  model, variables = _variables("batch")
  assert set(variables["batch_stats"]) == {"Norm_0"}
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  mask = jnp.array([True, True, False, False])
  _, new = model.apply(variables, x, train=True, mask=mask, mutable=["batch_stats"])
  garbage = x.at[2:].set(1e3)  # padded examples must not move the running statistics
  _, again = model.apply(variables, garbage, train=True, mask=mask, mutable=["batch_stats"])
  np.testing.assert_allclose(new["batch_stats"]["Norm_0"]["BatchNorm_0"]["mean"],
                             again["batch_stats"]["Norm_0"]["BatchNorm_0"]["mean"], rtol=1e-6)
