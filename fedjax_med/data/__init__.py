"""MedMNIST data as numpy arrays: registry facts, loading, synthetic test data."""

from fedjax_med.data import registry, synthetic
from fedjax_med.data.medmnist import Dataset, Split, default_root, load
from fedjax_med.data.registry import DATASETS, DatasetInfo, get_info

__all__ = [
  "DATASETS",
  "Dataset",
  "DatasetInfo",
  "Split",
  "default_root",
  "get_info",
  "load",
  "registry",
  "synthetic",
]
