"""The registry is the one place algorithms are named: config, validation, README read it."""

import os

import pytest

from configs import base as base_config
from configs import quickstart
from fedjax_med import config as config_lib
from fedjax_med import errors
from fedjax_med.algorithms import __main__ as algorithms_main
from fedjax_med.algorithms import registry

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


def test_readme_table_is_the_registry():
  with open(README) as f:
    assert algorithms_main.table() in f.read(), "rerun python -m fedjax_med.algorithms into README"


def test_config_defaults_come_from_the_registry():
  c = base_config.get_config()
  for name, entry in registry.ENTRIES.items():
    for key, hparam in entry.hparams.items():
      assert c.algorithm[name][key] == hparam.default
  assert c.algorithm.fedasam.rho == 0.5 and c.algorithm.fedsam.rho == 0.05


@pytest.mark.parametrize("name", registry.names())
def test_every_name_resolves_and_validates(name):
  c = quickstart.get_config()
  c.algorithm.name = name
  if not registry.get(name).federated:
    c.fl.num_clients = c.fl.clients_per_round = 1
  r = config_lib.resolve(c)
  config_lib.validate(r)
  assert r.fl.server_opt == registry.get(name).server.opt
  assert r.fl.server_lr == registry.get(name).server.lr


def test_fedadam_on_the_quickstart_gets_adam_at_its_own_lr():
  c = quickstart.get_config()
  c.algorithm.name = "fedadam"
  r = config_lib.resolve(c)
  assert (r.fl.server_opt, r.fl.server_lr, r.fl.server_eps) == ("adam", 0.01, 1e-3)
  c.fl.server_lr = 0.003  # an explicit value wins
  assert config_lib.resolve(c).fl.server_lr == 0.003
  assert c.fl.server_lr == 0.003 and c.fl.server_opt is None  # resolve returns a copy


def test_deprecated_flat_keys_move_to_nested_with_a_warning(caplog):
  c = base_config.get_config()
  c.algorithm.mu, c.algorithm.rho, c.algorithm.feddyn_alpha = 0.2, 0.3, 0.4
  c.algorithm.asam_eta, c.algorithm.server_eps = 0.05, 1e-4
  r = config_lib.resolve(c)
  assert r.algorithm.fedprox.mu == 0.2 and r.algorithm.feddyn.alpha == 0.4
  assert r.algorithm.fedsam.rho == 0.3 and r.algorithm.fedasam.rho == 0.3
  assert r.algorithm.fedasam.eta == 0.05 and r.fl.server_eps == 1e-4
  assert r.algorithm.mu is None  # moved, not kept twice
  assert "algorithm.mu is deprecated" in caplog.text
  assert "algorithm.fedprox.mu" in caplog.text


@pytest.mark.parametrize("overrides,match", [
    ({"algorithm.name": "fedadam", "fl.server_opt": "sgd"}, "fl.server_opt"),
    ({"algorithm.name": "scaffold", "fl.client_momentum": 0.9}, "plain local SGD"),
    ({"algorithm.name": "fedprox", "algorithm.fedprox.mu": -1.0}, "algorithm.fedprox.mu"),
    ({"algorithm.feddyn.alpha": 0.0}, "algorithm.feddyn.alpha"),
    ({"algorithm.name": "fedavgg"}, "choose one of"),
    ({"fl.server_opt": "rmsprop"}, "fl.server_opt"),
])
def test_bad_algorithm_settings_are_one_clear_error(overrides, match):
  c = base_config.apply(quickstart.get_config(), overrides)
  with pytest.raises(errors.ConfigError, match=match):
    config_lib.validate(config_lib.resolve(c))
