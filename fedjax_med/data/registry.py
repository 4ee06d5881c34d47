"""Facts about the MedMNIST v2 2D datasets: files, checksums, shapes, tasks.

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

SIZES = (28, 64, 128, 224)
_ZENODO = "https://zenodo.org/records/10519652/files"


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """One MedMNIST 2D dataset.

  Attributes:
    name: the MedMNIST flag, e.g. ``"pneumoniamnist"``.
    task: ``"binary-class"``, ``"multi-class"``, ``"ordinal-regression"`` or
      ``"multi-label, binary-class"`` (as in ``medmnist.INFO``).
    channels: 1 (gray) or 3 (RGB).
    labels: class names, index = label.
    split_sizes: number of examples in ``train``, ``val`` and ``test``.
    md5: MD5 of the official ``.npz`` file for each image size.
  """

  name: str
  task: str
  channels: int
  labels: tuple[str, ...]
  split_sizes: dict[str, int]
  md5: dict[int, str]

  @property
  def num_classes(self) -> int:
    return len(self.labels)

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
                  {int(size): md5 for size, md5 in r["md5"].items()})
      for r in rows
  )


_INFOS = _load_infos()
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _INFOS}


def get_info(name: str) -> DatasetInfo:
  """Returns the facts for a MedMNIST 2D flag; raises KeyError if unknown."""
  return DATASETS[name]
