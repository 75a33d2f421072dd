"""Dataset registry: small image classification sets held whole on the device.

Each entry knows its number of classes, channels and training-set size without loading
anything (so the size is available without importing torch), and a loader that returns
the fixed train/test split as tensors. Batches are drawn by indexing these tensors with
a permutation; there is no DataLoader.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class DataSplit:
    """Train and test tensors: images ``(N, C, H, W)`` float32, labels ``(N,)`` int64."""

    train_images: "torch.Tensor"
    train_labels: "torch.Tensor"
    test_images: "torch.Tensor"
    test_labels: "torch.Tensor"

    def to(self, device: "torch.device | str") -> "DataSplit":
        """Return the same split with every tensor on ``device``."""
        return DataSplit(*(tensor.to(device) for tensor in (
            self.train_images, self.train_labels, self.test_images, self.test_labels)))


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its shape facts and a loader of its fixed split (on CPU)."""

    name: str
    num_classes: int
    in_channels: int
    train_size: int
    test_size: int
    load_cpu: Callable[[], DataSplit]


def _load_digits() -> DataSplit:
    """sklearn's 8x8 digits: pixels / 16, standardised with the train mean and std."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float64) / 16.0
    labels = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels)
    mean, std = train_x.mean(), train_x.std()
    train_x = (train_x - mean) / std
    test_x = (test_x - mean) / std

    def images_tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).unsqueeze(1)

    return DataSplit(images_tensor(train_x), torch.from_numpy(train_y),
                     images_tensor(test_x), torch.from_numpy(test_y))


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(name="digits", num_classes=10, in_channels=1,
                          train_size=1347, test_size=450, load_cpu=_load_digits),
}


def dataset_spec(dataset_cfg: Mapping[str, Any]) -> DatasetSpec:
    """Look up the registry entry named by ``dataset_cfg["name"]``; ``ValueError`` if unknown."""
    name = dataset_cfg.get("name") if isinstance(dataset_cfg, Mapping) else None
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}")
    extra = set(dataset_cfg) - {"name"}
    if extra:
        raise ValueError(f"dataset {name!r} takes no options, got {sorted(extra)}")
    return DATASETS[name]


def train_size(dataset_cfg: Mapping[str, Any]) -> int:
    """Number of training images of a dataset, without loading it or importing torch."""
    return dataset_spec(dataset_cfg).train_size


@functools.lru_cache(maxsize=None)
def _cached_split(name: str, device: str) -> DataSplit:
    split = DATASETS[name].load_cpu()
    return split if device == "cpu" else split.to(device)


def load_split(dataset_cfg: Mapping[str, Any], device: "torch.device | str" = "cpu") -> DataSplit:
    """Return the dataset's fixed train/test split on ``device`` (cached per process).

    The tensors are shared between callers: treat them as read-only.
    """
    spec = dataset_spec(dataset_cfg)
    return _cached_split(spec.name, str(device))
