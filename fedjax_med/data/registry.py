"""Facts about the MedMNIST v2 datasets (2D and 3D): files, checksums, shapes, tasks.

The values are those of ``medmnist.INFO`` in the ``medmnist`` package (v3.0.2),
kept in ``medmnist_info.json`` beside this module so the project never has to import ``medmnist`` (which pulls torch).
Cite: Jiancheng Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark
for 2D and 3D biomedical image classification", Scientific Data, 2023.
The data itself is licensed CC BY 4.0.
"""

from __future__ import annotations

import dataclasses
import json
import os

SIZES = (28, 64, 128, 224)  # image sides of the 2D sets (MedMNIST+)
SIZES_3D = (28, 64)  # volume sides of the 3D sets
_ZENODO = "https://zenodo.org/records/10519652/files"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """One MedMNIST dataset.

  Attributes:
    name: the MedMNIST flag, e.g. ``"pneumoniamnist"``.
    task: ``"binary-class"``, ``"multi-class"``, ``"ordinal-regression"`` or
      ``"multi-label, binary-class"`` (as in ``medmnist.INFO``).
    channels: 1 (gray) or 3 (RGB).
    labels: class names, index = label.
    split_sizes: number of examples in ``train``, ``val`` and ``test``.
    md5: MD5 of the official ``.npz`` file for each image size.
    dims: spatial dimensions: 2 (images ``[H, W, ch]``) or 3 (volumes
      ``[D, H, W, ch]``: the ``*mnist3d`` sets, CT / MRA / electron microscopy).
  """

  name: str
  task: str
  channels: int
  labels: tuple[str, ...]
  split_sizes: dict[str, int]
  md5: dict[int, str]
  dims: int = 2

  @property
  def num_classes(self) -> int:
    """Classes of a single-label task; labels (outputs) of the multi-label one."""
    return len(self.labels)

  @property
  def sizes(self) -> tuple[int, ...]:
    """The image (or volume) sides the official files exist at."""
    return SIZES_3D if self.dims == 3 else SIZES

  @property
  def multi_label(self) -> bool:
    return self.task.startswith("multi-label")

  def filename(self, size: int) -> str:
    """The official file name, e.g. ``pneumoniamnist_64.npz``."""
    return f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz"

  def url(self, size: int) -> str:
    return f"{_ZENODO}/{self.filename(size)}?download=1"


def _load_infos() -> tuple[DatasetInfo, ...]:
  """The table in ``medmnist_info.json`` (beside this file), one object per dataset."""
  with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "medmnist_info.json")) as f:
    rows = json.load(f)
  return tuple(
      DatasetInfo(r["name"], r["task"], r["channels"], tuple(r["labels"]), r["split_sizes"],
                  {int(size): md5 for size, md5 in r["md5"].items()}, r.get("dims", 2))
      for r in rows
  )


_INFOS = _load_infos()
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _INFOS}


def get_info(name: str) -> DatasetInfo:
  """Returns the facts for a MedMNIST flag; raises KeyError if unknown."""
  return DATASETS[name]
