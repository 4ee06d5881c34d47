"""Tests for fedjax_med.data.medmnist: finding, downloading, verifying, loading."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from fedjax_med import errors
from fedjax_med.data import medmnist, registry, synthetic
from tests import testing

_SMALL = dict(n_train=12, n_val=4, n_test=6)


def _payload(name: str = "pneumoniamnist", size: int = 28, **kwargs) -> bytes:
  """The bytes of a small synthetic .npz file."""
  buf = io.BytesIO()
  np.savez_compressed(buf, **synthetic.make_arrays(name, size, **{**_SMALL, **kwargs}))
  return buf.getvalue()


def _patch_urlopen(monkeypatch, payload: bytes | None = None, error: Exception | None = None):
  """Replaces urlopen; returns the list of URLs it was called with."""
  calls = []

  def fake_urlopen(url, timeout=None):
    calls.append((url, timeout))
    if error is not None:
      raise error
    return io.BytesIO(payload)

  monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
  return calls


def _patch_info(monkeypatch, name: str, size: int, payload: bytes) -> registry.DatasetInfo:
  """Makes the registry expect ``payload`` (its MD5 and split sizes) for ``name``."""
  info = dataclasses.replace(
    registry.DATASETS[name],
    md5={**registry.DATASETS[name].md5, size: hashlib.md5(payload).hexdigest()},
    split_sizes={"train": _SMALL["n_train"], "val": _SMALL["n_val"], "test": _SMALL["n_test"]},
  )
  monkeypatch.setitem(registry.DATASETS, name, info)
  return info


def test_default_root(monkeypatch, tmp_path):
  monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path))
  assert medmnist.default_root() == str(tmp_path)
  monkeypatch.delenv("MEDMNIST_ROOT")
  assert medmnist.default_root() == os.path.expanduser(os.path.join("~", ".medmnist"))


def test_load_uses_default_root(monkeypatch, tmp_path):
  synthetic.write_npz(tmp_path / "breastmnist.npz", name="breastmnist", **_SMALL)
  monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path))
  ds = medmnist.load("breastmnist", download=False, verify_md5=False)
  assert len(ds.train.labels) == _SMALL["n_train"]


def test_missing_file_without_download(tmp_path):
  info = registry.get_info("pneumoniamnist")
  with pytest.raises(errors.DataError) as e:
    medmnist.load("pneumoniamnist", root=str(tmp_path), download=False)
  msg = str(e.value)
  for part in (
    "pneumoniamnist.npz",
    info.url(28),
    str(tmp_path),
    "--config.data.root",
    "MEDMNIST_ROOT",
  ):
    assert part in msg


def test_missing_file_offline_leaves_nothing(monkeypatch, tmp_path):
  root = tmp_path / "new_dir"
  calls = _patch_urlopen(monkeypatch, error=urllib.error.URLError("no network"))
  with pytest.raises(errors.DataError, match=r"pneumoniamnist_64\.npz.*no network") as e:
    medmnist.load("pneumoniamnist", root=str(root), size=64)
  assert registry.get_info("pneumoniamnist").url(64) in str(e.value)
  assert calls == [(registry.get_info("pneumoniamnist").url(64), medmnist.DOWNLOAD_TIMEOUT_S)]
  assert os.listdir(root) == []


def test_download_interrupted_leaves_nothing(monkeypatch, tmp_path):
  class Broken(io.BytesIO):
    def read(self, n=-1):
      if self.tell() > 0:
        raise TimeoutError("read timed out")
      return super().read(10)

  monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: Broken(b"x" * 100))
  with pytest.raises(errors.DataError, match="TimeoutError"):
    medmnist.load("breastmnist", root=str(tmp_path))
  assert os.listdir(tmp_path) == []


def test_downloaded_payload_with_wrong_md5_is_discarded(monkeypatch, tmp_path):
  _patch_urlopen(monkeypatch, payload=_payload())
  with pytest.raises(errors.DataError, match="MD5") as e:
    medmnist.load("pneumoniamnist", root=str(tmp_path))
  assert registry.get_info("pneumoniamnist").md5[28] in str(e.value)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name,size", [("pneumoniamnist", 28), ("dermamnist", 64)])
def test_successful_download(monkeypatch, tmp_path, name, size):
  payload = _payload(name, size)
  info = _patch_info(monkeypatch, name, size, payload)
  calls = _patch_urlopen(monkeypatch, payload=payload)
  ds = medmnist.load(name, root=str(tmp_path), size=size)
  assert [url for url, _ in calls] == [info.url(size)]
  assert os.listdir(tmp_path) == [info.filename(size)]
  assert (tmp_path / info.filename(size)).read_bytes() == payload
  assert ds.train.images.shape == (_SMALL["n_train"], size, size, info.channels)
  # A second load finds the file and does not download again.
  medmnist.load(name, root=str(tmp_path), size=size)
  assert len(calls) == 1


def test_md5_mismatch_on_local_file(tmp_path):
  synthetic.write_npz(tmp_path / "pneumoniamnist.npz", **_SMALL)
  with pytest.raises(errors.DataError, match="MD5") as e:
    medmnist.load("pneumoniamnist", root=str(tmp_path), download=False)
  assert "verify_md5=False" in str(e.value)
  assert registry.get_info("pneumoniamnist").url(28) in str(e.value)


def test_official_split_sizes_checked_when_verifying(monkeypatch, tmp_path):
  payload = _payload()
  _patch_info(monkeypatch, "pneumoniamnist", 28, payload)
  other = dataclasses.replace(
    registry.DATASETS["pneumoniamnist"], split_sizes={"train": 1, "val": 1, "test": 1}
  )
  monkeypatch.setitem(registry.DATASETS, "pneumoniamnist", other)
  (tmp_path / "pneumoniamnist.npz").write_bytes(payload)
  with pytest.raises(errors.DataError, match="split sizes"):
    medmnist.load("pneumoniamnist", root=str(tmp_path))
  # Without verification the same file loads (structure only).
  medmnist.load("pneumoniamnist", root=str(tmp_path), verify_md5=False)


def _write(tmp_path, filename="pneumoniamnist.npz", **arrays) -> None:
  np.savez(tmp_path / filename, **arrays)


def _bad_arrays(change: str) -> dict[str, np.ndarray]:
  arrays = synthetic.make_arrays(**_SMALL)
  if change == "missing_key":
    del arrays["val_labels"]
  elif change == "float_images":
    arrays["train_images"] = arrays["train_images"].astype(np.float32)
  elif change == "rgb_for_gray":
    arrays["train_images"] = np.repeat(arrays["train_images"][..., None], 3, axis=-1)
  elif change == "wrong_size":
    arrays["test_images"] = np.zeros((_SMALL["n_test"], 64, 64), np.uint8)
  elif change == "label_out_of_range":
    arrays["val_labels"][0, 0] = 2
  elif change == "label_count":
    arrays["train_labels"] = arrays["train_labels"][:-1]
  elif change == "float_labels":
    arrays["test_labels"] = arrays["test_labels"].astype(np.float32)
  elif change == "multi_column_labels":
    arrays["test_labels"] = np.zeros((_SMALL["n_test"], 2), np.uint8)
  return arrays


@pytest.mark.parametrize(
  "change,match",
  [
    ("missing_key", r"missing keys \['val_labels'\]"),
    ("float_images", "dtype float32, expected uint8"),
    ("rgb_for_gray", r"shape \(12, 28, 28, 3\)"),
    ("wrong_size", r"test: images have shape \(6, 64, 64\)"),
    ("label_out_of_range", r"val: labels span \[\d, 2\], expected \[0, 1\]"),
    ("label_count", "12 images but 11 labels"),
    ("float_labels", "integer dtype"),
    ("multi_column_labels", r"labels have shape \(6, 2\)"),
    ("huge_shape", r"train_images.npy declares shape \(1000000000000, 28, 28\) of uint8 "
     r"\(784000000000000 bytes\) but holds 9408 bytes"),
    ("truncated_member", r"val_images.npy declares shape \(4, 28, 28\) .* holds 1000 bytes"),
  ],
)
def test_malformed_file(tmp_path, change, match):
  if change == "huge_shape":  # refused from the header, before numpy allocates 784 TB
    testing.write_npz_declaring(tmp_path / "pneumoniamnist.npz", synthetic.make_arrays(**_SMALL),
                                "train_images", shape=(10**12, 28, 28))
  elif change == "truncated_member":
    testing.write_npz_declaring(tmp_path / "pneumoniamnist.npz", synthetic.make_arrays(**_SMALL),
                                "val_images", keep_bytes=1000)
  else:
    _write(tmp_path, **_bad_arrays(change))
  with pytest.raises(errors.DataError, match=match) as e:
    medmnist.load("pneumoniamnist", root=str(tmp_path), download=False, verify_md5=False)
  assert "Delete it and download it again" in str(e.value)


def test_arrays_larger_than_memory_are_refused_before_loading(tmp_path, monkeypatch):
  _write(tmp_path, **synthetic.make_arrays(**_SMALL))
  monkeypatch.setattr(medmnist, "_physical_memory", lambda: 1000)
  monkeypatch.setattr(np, "load", None)  # never reached
  with pytest.raises(errors.DataError, match=r"GiB, more than this machine's"):
    medmnist.load("pneumoniamnist", root=str(tmp_path), download=False, verify_md5=False)


@pytest.mark.parametrize("content", [b"", b"this is not a zip file", b"PK\x03\x04truncated"])
def test_not_a_zip(tmp_path, content):
  (tmp_path / "bloodmnist.npz").write_bytes(content)
  with pytest.raises(errors.DataError, match="not a readable .npz"):
    medmnist.load("bloodmnist", root=str(tmp_path), download=False, verify_md5=False)


def test_truncated_zip(tmp_path):
  payload = _payload("bloodmnist")
  (tmp_path / "bloodmnist.npz").write_bytes(payload[: len(payload) // 2])
  with pytest.raises(errors.DataError, match="bloodmnist.npz"):
    medmnist.load("bloodmnist", root=str(tmp_path), download=False, verify_md5=False)


def test_directory_in_place_of_file(tmp_path):
  (tmp_path / "breastmnist.npz").mkdir()
  with pytest.raises(errors.DataError, match="not a file"):
    medmnist.load("breastmnist", root=str(tmp_path), download=False)


def test_unknown_name(tmp_path):
  with pytest.raises(errors.DataError, match="Unknown MedMNIST dataset 'mnist'") as e:
    medmnist.load("mnist", root=str(tmp_path))
  for name in registry.DATASETS:
    assert name in str(e.value)


@pytest.mark.parametrize("size", [32, 0, "28"])
def test_bad_size(tmp_path, size):
  with pytest.raises(errors.DataError, match=r"Valid sizes: 28, 64, 128, 224"):
    medmnist.load("pathmnist", root=str(tmp_path), size=size)


@pytest.mark.parametrize("size", [128, 224, 32])
def test_3d_sizes(tmp_path, size):
  with pytest.raises(errors.DataError, match=r"volume size .*Valid sizes: 28, 64 "):
    medmnist.load("organmnist3d", root=str(tmp_path), size=size)


_3D_SETS = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d",
            "vesselmnist3d", "synapsemnist3d")


def test_registry_has_the_six_3d_sets():
  assert {n for n, i in registry.DATASETS.items() if i.dims == 3} == set(_3D_SETS)
  for name in _3D_SETS:
    info = registry.get_info(name)
    assert info.sizes == (28, 64) and set(info.md5) == {28, 64} and info.channels == 1
  # Two values checked by hand against medmnist 3.0.2's INFO table.
  assert registry.get_info("adrenalmnist3d").md5[28] == "bbd3c5a5576322bc4cdfea780653b1ce"
  assert registry.get_info("organmnist3d").split_sizes == {"train": 971, "val": 161,
                                                           "test": 610}


@pytest.mark.parametrize("name,size", [("organmnist3d", 28), ("adrenalmnist3d", 64)])
def test_3d_round_trip(tmp_path, name, size):
  small = dict(n_train=6, n_val=2, n_test=2)
  arrays = synthetic.make_arrays(name, size, **small)
  assert arrays["train_images"].shape == (6, size, size, size)  # official layout [N, D, H, W]
  synthetic.write_npz(tmp_path / registry.get_info(name).filename(size), name=name, size=size,
                      **small)
  ds = medmnist.load(name, root=str(tmp_path), size=size, download=False, verify_md5=False)
  assert ds.image_shape == (size, size, size, 1)
  assert ds.train.images.shape == (6, size, size, size, 1) and ds.train.labels.shape == (6,)
  np.testing.assert_array_equal(ds.train.images[..., 0], arrays["train_images"])


def test_3d_wrong_shape_is_refused():
  arrays = synthetic.make_arrays("organmnist3d", 28, n_train=4, n_val=2, n_test=2)
  arrays["train_images"] = arrays["train_images"][:, 0]  # a 2D slice stack, not volumes
  with pytest.raises(errors.DataError, match=r"volumes have shape \(4, 28, 28\), expected "
                     r"\[N, 28, 28, 28\] stored as \[N, D, H, W\]"):
    medmnist.from_arrays("organmnist3d", arrays, size=28)


def test_chestmnist_multi_label_round_trip(tmp_path):
  arrays = synthetic.make_arrays("chestmnist", **_SMALL)
  assert arrays["train_labels"].shape == (_SMALL["n_train"], 14)
  synthetic.write_npz(tmp_path / "chestmnist.npz", name="chestmnist", **_SMALL)
  ds = medmnist.load("chestmnist", root=str(tmp_path), download=False, verify_md5=False)
  assert ds.multi_label and ds.num_classes == 14
  assert ds.train.labels.shape == (_SMALL["n_train"], 14) and ds.train.labels.dtype == np.int32
  np.testing.assert_array_equal(ds.train.labels, arrays["train_labels"])


def test_chestmnist_bad_labels():
  arrays = synthetic.make_arrays("chestmnist", **_SMALL)
  single = dict(arrays, train_labels=arrays["train_labels"][:, :1])
  with pytest.raises(errors.DataError, match=r"expected \[N, 14\] \(one 0/1 column per finding"):
    medmnist.from_arrays("chestmnist", single)
  twos = dict(arrays, val_labels=arrays["val_labels"] * 2)
  with pytest.raises(errors.DataError, match="expected 0 / 1 per finding"):
    medmnist.from_arrays("chestmnist", twos)


def test_errors_are_user_errors():
  assert issubclass(errors.DataError, errors.UserError)


@pytest.mark.parametrize(
  "name,size", [("pneumoniamnist", 28), ("pathmnist", 64), ("bloodmnist", 28), ("organcmnist", 128)]
)
def test_round_trip(tmp_path, name, size):
  info = registry.get_info(name)
  arrays = synthetic.make_arrays(name, size, **_SMALL)
  path = synthetic.write_npz(tmp_path / info.filename(size), name=name, size=size, **_SMALL)
  assert path == str(tmp_path / info.filename(size))
  ds = medmnist.load(name, root=str(tmp_path), size=size, download=False, verify_md5=False)
  assert ds.image_shape == (size, size, info.channels)
  assert ds.num_classes == info.num_classes and ds.channels == info.channels
  for split in medmnist.SPLITS:
    s = ds.split(split)
    assert s is getattr(ds, split)
    assert s.images.dtype == np.uint8 and s.labels.dtype == np.int32
    assert s.images.shape == (len(s.labels), size, size, info.channels)
    np.testing.assert_array_equal(
      s.images.reshape(arrays[f"{split}_images"].shape), arrays[f"{split}_images"]
    )
    np.testing.assert_array_equal(s.labels, arrays[f"{split}_labels"][:, 0])


def test_unknown_split():
  ds = synthetic.make_dataset(**_SMALL)
  with pytest.raises(errors.ConfigError, match="train, val, test"):
    ds.split("validation")


@pytest.mark.parametrize("name", sorted(registry.DATASETS))
@pytest.mark.parametrize("size", registry.SIZES)
def test_registry_filenames_and_urls(name, size):
  info = registry.get_info(name)
  if size not in info.sizes:
    assert info.dims == 3 and size > 64
    return
  suffix = "" if size == 28 else f"_{size}"
  assert info.filename(size) == f"{name}{suffix}.npz"
  assert re.fullmatch(
    rf"https://zenodo\.org/records/\d+/files/{name}{suffix}\.npz\?download=1", info.url(size)
  )
  assert re.fullmatch(r"[0-9a-f]{32}", info.md5[size])
  assert info.channels in (1, 3) and info.num_classes >= 2
  assert set(info.split_sizes) == set(medmnist.SPLITS)


@pytest.mark.realdata
@pytest.mark.parametrize(
  "name,sizes",
  [
    ("pneumoniamnist", {"train": 4708, "val": 524, "test": 624}),
    ("breastmnist", {"train": 546, "val": 78, "test": 156}),
  ],
)
def test_real_file(name, sizes):
  root = testing.require(f"{name}.npz")
  ds = medmnist.load(name, root=str(root), download=False, verify_md5=True)
  for split, n in sizes.items():
    s = ds.split(split)
    assert s.images.shape == (n, 28, 28, 1) and s.images.dtype == np.uint8
    assert s.labels.shape == (n,) and s.labels.dtype == np.int32
    assert set(np.unique(s.labels)) == {0, 1}
