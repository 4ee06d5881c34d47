"""MedMNIST v2 datasets (2D images, 3D volumes) as numpy arrays: find, download, verify, load.

A dataset is one official ``.npz`` file per image size (see ``registry.py``).
``load`` reads it from a local folder, downloading it first when it is absent
and downloads are allowed. Every failure a user can fix (missing file, no
network, corrupt or foreign file, unknown name or size) raises
:class:`~fedjax_med.errors.DataError` with one message that names the problem
and the fix; the launcher prints it and exits with code 2.

Images stay ``uint8`` here; models normalise them. No JAX in this module.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from fedjax_med.data import registry
from fedjax_med.data.registry import DatasetInfo
from fedjax_med.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{split}_{part}" for split in SPLITS for part in ("images", "labels"))
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
# Deflate cannot expand data by more than ~1032x; numpy's .npz members are stored or deflated.
_MAX_DEFLATE_RATIO = 1100


class Split(NamedTuple):
  """One split of a dataset, as stored (no normalisation)."""

  images: np.ndarray  # [N, H, W, ch] (3D: [N, D, H, W, ch]) uint8
  labels: np.ndarray  # [N] int32 in [0, num_classes) (multi-label: [N, L] int32 in {0, 1})


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A loaded MedMNIST dataset at one image size.

  ``eq=False``: instances hold large arrays, so equality and hashing are by
  identity rather than element-wise.

  Attributes:
    info: registry facts (name, task, labels, ...).
    size: image (volume) side in pixels (one of ``info.sizes``).
    train: training split.
    val: validation split.
    test: test split.
  """

  info: DatasetInfo
  size: int
  train: Split
  val: Split
  test: Split

  @property
  def num_classes(self) -> int:
    return self.info.num_classes

  @property
  def channels(self) -> int:
    return self.info.channels

  @property
  def image_shape(self) -> tuple[int, ...]:
    """``(H, W, ch)`` of every image; ``(D, H, W, ch)`` of every 3D volume."""
    return (self.size,) * self.info.dims + (self.info.channels,)

  @property
  def multi_label(self) -> bool:
    return self.info.multi_label

  def split(self, name: str) -> Split:
    """Returns the split called ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
    if name not in SPLITS:
      raise ConfigError(f"Unknown split {name!r}; valid splits: {', '.join(SPLITS)}.")
    return getattr(self, name)


def default_root() -> str:
  """The data folder: ``$MEDMNIST_ROOT`` if set, else ``~/.medmnist``."""
  root = os.environ.get("MEDMNIST_ROOT")
  return os.path.expanduser(root if root else os.path.join("~", ".medmnist"))


def resolve_info(name: str, size: int) -> DatasetInfo:
  """Checks that ``name`` and ``size`` are supported and returns the registry entry.

  Args:
    name: MedMNIST flag, e.g. ``"pneumoniamnist"`` or ``"organmnist3d"``.
    size: image (volume) side in pixels.

  Returns:
    The :class:`DatasetInfo` for ``name``.

  Raises:
    DataError: unknown name or unsupported size.
  """
  info = registry.DATASETS.get(name)
  if info is None:
    raise DataError(
      f"Unknown MedMNIST dataset {name!r}. Valid names: {', '.join(sorted(registry.DATASETS))}."
    )
  if size not in info.sizes:
    kind = "volume" if info.dims == 3 else "image"
    raise DataError(
      f"Unsupported MedMNIST {kind} size {size!r} for {name}. "
      f"Valid sizes: {', '.join(map(str, info.sizes))} (--config.data.size)."
    )
  return info


def load(
  name: str,
  *,
  root: str | None = None,
  size: int = 28,
  download: bool = True,
  verify_md5: bool = True,
) -> Dataset:
  """Loads a MedMNIST dataset (2D or 3D) from ``root``, downloading it if needed.

  Args:
    name: MedMNIST flag, e.g. ``"pneumoniamnist"``, ``"pathmnist"``,
      ``"chestmnist"`` (multi-label) or ``"organmnist3d"`` (3D).
    root: folder holding the official ``.npz`` files; ``None`` means
      :func:`default_root`.
    size: image (volume) side in pixels, one of the dataset's ``info.sizes``.
    download: if the file is absent, fetch it from the official URL into
      ``root`` (via a temporary file, MD5-checked, then renamed into place,
      so a failed download never leaves a partial file).
    verify_md5: check the file's MD5 and split sizes against the registry.
      ``False`` only checks structure (keys, shapes, dtypes, label range);
      it is meant for synthetic files in tests. Downloads are always
      MD5-checked.

  Returns:
    The :class:`Dataset`, images ``[N, size, size, ch]`` (3D: ``[N, size, size,
    size, ch]``) uint8, labels ``[N]`` int32 (multi-label: ``[N, L]`` int32).

  Raises:
    DataError: unknown name or size, missing file that cannot be downloaded,
      or a corrupt or malformed file.
  """
  info = resolve_info(name, size)
  root = os.path.expanduser(root) if root else default_root()
  path = os.path.join(root, info.filename(size))
  if os.path.exists(path) and not os.path.isfile(path):
    raise DataError(f"{path} exists but is not a file; remove it so the .npz file can go there.")
  if not os.path.isfile(path):
    if not download:
      raise DataError(_missing_message(info, size, root, "downloads are disabled"))
    _download(info, size, root, path)
  elif verify_md5:
    _check_md5(path, info, size)
  arrays = _read_npz(path, info, size)
  return from_arrays(name, arrays, size=size, check_split_sizes=verify_md5, source=path)


def from_arrays(
  name: str,
  arrays: Mapping[str, np.ndarray],
  *,
  size: int = 28,
  check_split_sizes: bool = False,
  source: str = "arrays",
) -> Dataset:
  """Validates arrays in the official ``.npz`` layout and builds a :class:`Dataset`.

  Args:
    name: MedMNIST flag the arrays claim to be.
    arrays: the six official keys (``train_images`` ... ``test_labels``);
      images ``[N, H, W]`` (gray) or ``[N, H, W, 3]`` (RGB) uint8, 3D volumes
      ``[N, D, H, W]`` uint8; labels ``[N, 1]`` integer (multi-label:
      ``[N, L]`` of 0 / 1).
    size: expected image side in pixels.
    check_split_sizes: also require the official split sizes of the registry.
    source: what to call the arrays in error messages (e.g. a file path).

  Returns:
    The :class:`Dataset`.

  Raises:
    DataError: missing keys, wrong shapes or dtypes, labels out of range, or
      (with ``check_split_sizes``) split sizes that differ from the registry.
  """
  info = resolve_info(name, size)
  missing = [k for k in KEYS if k not in arrays]
  if missing:
    raise DataError(
      _corrupt_message(
        info, size, source, f"missing keys {missing} (has {sorted(arrays)}; expects {list(KEYS)})"
      )
    )
  splits = {
    split: _make_split(
      info, size, source, split, arrays[f"{split}_images"], arrays[f"{split}_labels"]
    )
    for split in SPLITS
  }
  if check_split_sizes:
    got = {split: len(s.labels) for split, s in splits.items()}
    if got != info.split_sizes:
      raise DataError(
        _corrupt_message(
          info, size, source, f"split sizes {got} differ from the official {info.split_sizes}"
        )
      )
  return Dataset(info=info, size=size, **splits)


def file_md5(path: str) -> str:
  """MD5 hex digest of a file, read in 1 MiB chunks."""
  digest = hashlib.md5(usedforsecurity=False)
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      digest.update(chunk)
  return digest.hexdigest()


def _check_layout(
  info: DatasetInfo, size: int, source: str, split: str, images: tuple, labels: tuple
) -> None:
  """Checks one split's ``(shape, dtype)`` of images and of labels against the registry.

  Only shapes and dtypes: ``_read_npz`` runs it on the ``.npy`` headers, before any
  array is read, and ``_make_split`` on the loaded arrays.
  """

  def fail(what: str) -> DataError:
    return DataError(_corrupt_message(info, size, source, f"{split}: {what}"))

  (image_shape, image_dtype), (label_shape, label_dtype) = images, labels
  image_shape, label_shape = tuple(image_shape), tuple(label_shape)
  if image_dtype != np.uint8:
    raise fail(f"images have dtype {image_dtype}, expected uint8")
  # Gray files store [N, H, W] ([N, D, H, W] in 3D); accept a trailing channel axis of 1 too.
  spatial = (size,) * info.dims
  if info.channels == 1 and len(image_shape) == 1 + info.dims:
    shape = image_shape + (1,)
  else:
    shape = image_shape
  if len(shape) != 2 + info.dims or shape[1:] != (*spatial, info.channels):
    axes = "D, H, W" if info.dims == 3 else "H, W"
    stored = f"[N, {axes}]" if info.channels == 1 else f"[N, {axes}, 3]"
    what = "volumes" if info.dims == 3 else "images"
    raise fail(
      f"{what} have shape {image_shape}, expected [N, {', '.join(map(str, spatial))}] "
      f"stored as {stored} ({info.channels} channel(s))"
    )
  if not np.issubdtype(label_dtype, np.integer):
    raise fail(f"labels have dtype {label_dtype}, expected an integer dtype")
  if info.multi_label:
    if len(label_shape) != 2 or label_shape[1] != info.num_classes:
      raise fail(f"labels have shape {label_shape}, expected [N, {info.num_classes}] "
                 f"(one 0/1 column per finding of this multi-label task)")
  elif not (len(label_shape) == 1 or (len(label_shape) == 2 and label_shape[1] == 1)):
    raise fail(f"labels have shape {label_shape}, expected [N, 1]")
  if label_shape[0] != image_shape[0]:
    raise fail(f"{image_shape[0]} images but {label_shape[0]} labels")


def _make_split(
  info: DatasetInfo, size: int, source: str, split: str, images: np.ndarray, labels: np.ndarray
) -> Split:
  """Checks one split and converts it to ``[N, H, W, ch]`` uint8 / ``[N]`` int32."""
  images, labels = np.asarray(images), np.asarray(labels)
  _check_layout(info, size, source, split, (images.shape, images.dtype),
                (labels.shape, labels.dtype))
  if images.ndim == 1 + info.dims:
    images = images[..., None]
  if info.multi_label:
    if labels.size and (labels.min() < 0 or labels.max() > 1):
      raise DataError(_corrupt_message(
        info, size, source, f"{split}: multi-label labels span [{labels.min()}, {labels.max()}], "
        "expected 0 / 1 per finding"))
    return Split(images=images, labels=labels.astype(np.int32))
  labels = labels.reshape(-1)
  if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
    raise DataError(_corrupt_message(
      info, size, source, f"{split}: labels span [{labels.min()}, {labels.max()}], "
      f"expected [0, {info.num_classes - 1}]"))
  return Split(images=images, labels=labels.astype(np.int32))


def _read_npz(path: str, info: DatasetInfo, size: int) -> dict[str, np.ndarray]:
  """Reads all arrays of an ``.npz`` file, turning any read failure into DataError.

  The ``.npy`` headers are checked first (``_check_headers``), so a file that declares
  an impossible or enormous shape is refused before anything is allocated.
  """
  try:
    with zipfile.ZipFile(path) as archive:
      _check_headers(archive, os.path.getsize(path), path, info, size)
    with np.load(path, allow_pickle=False) as npz:
      return {key: npz[key] for key in npz.files}
  except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zlib.error) as e:
    raise DataError(
      _corrupt_message(info, size, path, f"not a readable .npz archive ({type(e).__name__}: {e})")
    ) from None


def _npy_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> tuple[tuple, np.dtype, int]:
  """``(shape, dtype, header bytes)`` of one ``.npy`` member, read without its data."""
  with archive.open(member) as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
      shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
      raise ValueError(f"{member.filename}: .npy format version {version} is not supported")
    return shape, dtype, f.tell()


def _check_headers(
  archive: zipfile.ZipFile, file_size: int, source: str, info: DatasetInfo, size: int
) -> None:
  """Checks each split's ``.npy`` headers against the registry, the archive and the memory.

  A member's declared shape and dtype must fit the dataset (``_check_layout``) and
  account exactly for the member's size; that size must be possible for the bytes on
  disk (stored: equal; deflated: at most ~1032x); all arrays together must fit in memory.
  """

  def fail(what: str) -> DataError:
    return DataError(_corrupt_message(info, size, source, what))

  total = 0
  headers = {}
  for member in archive.infolist():  # every member: np.load reads them all
    ratio = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: _MAX_DEFLATE_RATIO}.get(
      member.compress_type)
    if ratio is None:
      raise fail(f"{member.filename} uses zip compression method {member.compress_type}; "
                 ".npz files are stored or deflated")
    if member.compress_size > file_size or member.file_size > ratio * member.compress_size + 1024:
      raise fail(f"{member.filename} declares {member.file_size} bytes from "
                 f"{member.compress_size} compressed bytes in a {file_size}-byte file")
    if not member.filename.endswith(".npy"):
      total += member.file_size
      continue
    shape, dtype, offset = _npy_header(archive, member)
    if dtype.hasobject:
      raise fail(f"{member.filename} holds Python objects (dtype {dtype})")
    declared = math.prod(shape) * dtype.itemsize
    if declared != member.file_size - offset:
      raise fail(f"{member.filename} declares shape {shape} of {dtype} ({declared} bytes) but "
                 f"holds {member.file_size - offset} bytes of data (truncated or altered)")
    total += declared
    headers[member.filename[: -len(".npy")]] = (shape, dtype)
  for split in SPLITS:
    images, labels = headers.get(f"{split}_images"), headers.get(f"{split}_labels")
    if images is not None and labels is not None:
      _check_layout(info, size, source, split, images, labels)
  memory = _physical_memory()
  if memory is not None and total > memory:
    raise fail(f"its arrays declare {total / 2**30:.1f} GiB, more than this machine's "
               f"{memory / 2**30:.1f} GiB of memory")


def _physical_memory() -> int | None:
  try:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):
    return None


def _check_md5(path: str, info: DatasetInfo, size: int) -> None:
  expected = info.md5[size]
  got = file_md5(path)
  if got != expected:
    raise DataError(
      _corrupt_message(info, size, path, f"MD5 is {got}, expected {expected}")
      + " (For a synthetic or modified file, load it with verify_md5=False.)"
    )


def _download(info: DatasetInfo, size: int, root: str, path: str) -> None:
  """Downloads the official file to ``path`` via a temp file in the same folder.

  The temp file is MD5-checked and then atomically renamed into place; on any
  failure it is removed, so ``path`` either is complete or does not exist.
  """
  url = info.url(size)
  expected = info.md5[size]
  try:
    os.makedirs(root, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{info.filename(size)}.", suffix=".part")
  except OSError as e:
    raise DataError(
      _missing_message(info, size, root, f"cannot write to the folder ({e})")
    ) from None
  logging.getLogger(__name__).info("Downloading %s to %s", url, path)
  try:
    digest = hashlib.md5(usedforsecurity=False)
    try:
      with (
        os.fdopen(fd, "wb") as out,
        urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp,
      ):
        while chunk := resp.read(_CHUNK):
          digest.update(chunk)
          out.write(chunk)
    except (OSError, http.client.HTTPException, ValueError) as e:
      raise DataError(
        _missing_message(info, size, root, f"the download failed ({type(e).__name__}: {e})")
      ) from None
    if digest.hexdigest() != expected:
      raise DataError(
        f"Downloaded {url} but its MD5 is {digest.hexdigest()}, expected {expected}; "
        f"the download was corrupt or incomplete and was discarded. Try again, or download "
        f"{info.filename(size)} by hand into {root}."
      )
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _missing_message(info: DatasetInfo, size: int, root: str, reason: str) -> str:
  return (
    f"MedMNIST file {info.filename(size)} not found in {root} and {reason}. "
    f"Download it from {info.url(size)} and put it in {root}, or point to the folder "
    f"that holds it with --config.data.root=/path/to/folder or the MEDMNIST_ROOT "
    f"environment variable."
  )


def _corrupt_message(info: DatasetInfo, size: int, source: str, what: str) -> str:
  return (
    f"{source} is not a valid MedMNIST file for {info.name} at {size}px: {what}. "
    f"Delete it and download it again from {info.url(size)}."
  )
