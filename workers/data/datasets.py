"""Dataset registry and the train/test split a worker trains on.

A dataset config is a dict::

    {"name": "digits"}
    {"name": "cifar10", "root": "data/cifar10"}                  # torchvision's cifar-10-batches-py
    {"name": "imagenet", "root": "data/imagenet", "image_size": 224}   # ImageFolder train/ + val/
    {"name": "image_folder", "root": ...}                         # the same ImageFolder layout
    {"name": "voc07", "root": "data/voc07"}          # VOCdevkit layout, multi-label (workers.data.voc)
    {"name": "places205", "root": "data/places205"}  # its list files + images256/ (workers.data.places)
    ... + "channels": 1 (voc07, places205: read the images in grey, for a 1-channel network)
    ... + "subset": {"kind": "images_per_class" | "classes", "fraction": 0.1, "seed": 0}

- ``digits`` (scikit-learn, no folder) and ``cifar10`` are held whole as tensors on the
  training device (CIFAR-10 is 600 MB in float32); batches are drawn by indexing them,
  with no per-step host work. CIFAR-10 trains with flips + crops of a 2-pixel-padded
  image done on the device (``DataSplit.augment == "flip_crop"``). Digits takes no
  options (and no subset: the ``s4l``/``labels_10pct`` tasks have their own labelled subset).
- ImageFolder datasets keep their images on disk (:class:`workers.data.image_folder.LazyImages`)
  and train through a DataLoader with random-resized crops + flips at ``image_size``
  (default 224; evaluation: resize to ``image_size * 256/224`` and central crop).
- ``voc07`` (:mod:`workers.data.voc`) trains on trainval and tests on test; its labels are
  ``(N, 20)`` rows of the devkit's 1 (present) / 0 (difficult only: ignored) / -1 (absent)
  (``DatasetSpec.multi_label``). ``places205`` (:mod:`workers.data.places`) reads the list files
  its distribution ships. Both read their images like ImageFolder's.
- ``subset`` restricts the *training* split to a reproducible 10%: of the images of every
  class, or of the classes (labels keep their original indices; the test split is whole).
  The choice is :func:`workers.data.folders.subset_positions` (hash order, no torch), so the
  subset's size is known at plan time.

Nothing is downloaded. Every fact the planner needs (:func:`folder_facts`: classes,
channels, train and test sizes) is computed without torch, and a missing or malformed
folder raises :class:`workers.data.folders.DataFolderError` naming the file and what was
expected.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from workers.data import folders

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class DataSplit:
    """Train and test images ``(N, C, H, W)`` float32 (tensors, or
    :class:`workers.data.image_folder.LazyImages` for folders read on demand) and labels ``(N,)``
    int64; ``augment``: the on-device training augmentation (``None`` or ``"flip_crop"``).

    Derive a split with ``dataclasses.replace`` so ``augment`` is kept.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    augment: str | None = None

    def to(self, device: torch.device | str) -> DataSplit:
        """Return the same split with every tensor on ``device``."""
        return replace(self, **{name: getattr(self, name).to(device) for name in (
            "train_images", "train_labels", "test_images", "test_labels")})


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset as configured: its shape facts and a loader of its split (on CPU)."""

    name: str
    num_classes: int
    in_channels: int
    train_size: int
    test_size: int
    load_cpu: Callable[[], DataSplit]
    #: labels are ``(N, num_classes)`` rows of 1 / 0 (ignored) / -1 (VOC07) instead of class indices.
    multi_label: bool = False


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


CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def _load_cifar(root: str) -> DataSplit:
    """CIFAR-10 from torchvision's pickled batches, normalised with the usual channel statistics."""
    import numpy as np
    import torch

    facts = folders.cifar_facts(root)
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)

    def images(names) -> torch.Tensor:
        pixels = b"".join(folders.read_cifar_batch(facts.folder / name)[0] for name in names)
        array = np.frombuffer(pixels, dtype=np.uint8).reshape(-1, 3, 32, 32)
        return (torch.from_numpy(array.astype(np.float32)) / 255 - mean) / std

    return DataSplit(images(folders.CIFAR_TRAIN_BATCHES), torch.tensor(facts.train_labels),
                     images([folders.CIFAR_TEST_BATCH]), torch.tensor(facts.test_labels), augment="flip_crop")


def _load_image_folder(root: str, image_size: int) -> DataSplit:
    import torch

    from workers.data.image_folder import LazyImages

    facts = folders.image_folder_facts(root)

    def split(name: str):
        files = [path for path, _ in facts.samples[name]]
        return LazyImages(facts.root, files, image_size), torch.tensor(facts.labels(name))

    return DataSplit(*split("train"), *split("val"))


def _load_voc(root: str, image_size: int, channels: int) -> DataSplit:
    import torch

    from workers.data import voc
    from workers.data.image_folder import LazyImages

    facts = voc.voc_facts(root)

    def split(ids: tuple[str, ...], set_name: str):
        images = LazyImages(facts.folder, [facts.image(i) for i in ids], image_size, channels)
        return images, torch.tensor(voc.voc_labels(root, set_name), dtype=torch.int64)

    return DataSplit(*split(facts.train_ids, voc.TRAIN_SET), *split(facts.test_ids, voc.TEST_SET))


def _load_places(root: str, image_size: int, channels: int) -> DataSplit:
    import torch

    from workers.data.image_folder import LazyImages
    from workers.data.places import places_facts

    facts = places_facts(root)

    def split(name: str):
        files = [path for path, _ in facts.samples[name]]
        return LazyImages(facts.images, files, image_size, channels), torch.tensor(facts.labels(name))

    return DataSplit(*split("train"), *split("val"))


@dataclass(frozen=True)
class _Kind:
    """How a dataset name is read: its options (with defaults) beyond name and subset."""

    options: Mapping[str, Any]
    needs_root: bool
    takes_subset: bool = True
    multi_label: bool = False


DIGITS = DatasetSpec(name="digits", num_classes=10, in_channels=1, train_size=1347, test_size=450,
                     load_cpu=_load_digits)
#: datasets by name; ImageFolder names differ only in what they document (the layout is one).
KINDS: dict[str, _Kind] = {
    "digits": _Kind({}, needs_root=False, takes_subset=False),
    "cifar10": _Kind({}, needs_root=True),
    "imagenet": _Kind({"image_size": 224}, needs_root=True),
    "places205": _Kind({"image_size": 224, "channels": 3}, needs_root=True),
    "voc07": _Kind({"image_size": 224, "channels": 3}, needs_root=True, takes_subset=False,
                   multi_label=True),
    "image_folder": _Kind({"image_size": 224}, needs_root=True),
}
#: the datasets whose facts do not depend on a folder.
DATASETS: dict[str, DatasetSpec] = {"digits": DIGITS}
SUBSET_KEYS = ("kind", "fraction", "seed")


def _check_config(dataset_cfg: Mapping[str, Any]) -> tuple[str, dict]:
    """``(name, options with defaults)``; ``ValueError`` naming the bad key otherwise."""
    name = dataset_cfg.get("name") if isinstance(dataset_cfg, Mapping) else None
    if name not in KINDS:
        raise ValueError(f"unknown dataset {name!r}; known: {sorted(KINDS)}")
    kind = KINDS[name]
    allowed = {"name", *kind.options, *(("root",) if kind.needs_root else ()),
               *(("subset",) if kind.takes_subset else ())}
    extra = sorted(set(dataset_cfg) - allowed)
    if extra:
        raise ValueError(f"dataset {name!r}: unknown key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")
    options = {**kind.options, **{k: dataset_cfg[k] for k in kind.options if k in dataset_cfg}}
    if kind.needs_root and not dataset_cfg.get("root"):
        raise ValueError(f"dataset {name!r} needs 'root': the local folder holding it (nothing is downloaded)")
    if "image_size" in options and not (isinstance(options["image_size"], int) and options["image_size"] > 0):
        raise ValueError(f"dataset {name!r}: image_size must be a positive int, got {options['image_size']!r}")
    if "channels" in options and options["channels"] not in (1, 3):
        raise ValueError(f"dataset {name!r}: channels must be 1 or 3, got {options['channels']!r}")
    subset = dataset_cfg.get("subset")
    if subset is not None:
        if not isinstance(subset, Mapping) or set(subset) - set(SUBSET_KEYS):
            raise ValueError(f"dataset {name!r}: subset must be {{kind, fraction, seed}}, got {subset!r}")
        if subset.get("kind", "images_per_class") not in folders.SUBSET_KINDS:
            raise ValueError(f"dataset {name!r}: subset.kind must be one of {', '.join(folders.SUBSET_KINDS)}")
        if not 0 < float(subset.get("fraction", 0.1)) <= 1:
            raise ValueError(f"dataset {name!r}: subset.fraction must be in (0, 1]")
    return name, options


def _subset_args(dataset_cfg: Mapping[str, Any]) -> tuple[str, float, int] | None:
    subset = dataset_cfg.get("subset")
    if subset is None:
        return None
    return subset.get("kind", "images_per_class"), float(subset.get("fraction", 0.1)), int(subset.get("seed", 0))


def _labels_of(name: str, dataset_cfg: Mapping[str, Any]) -> tuple[tuple[int, ...], int, int, int]:
    """``(train labels, number of classes, channels, test size)`` without loading images."""
    return _folder_labels(name, str(dataset_cfg["root"]), int(dataset_cfg.get("channels", 3)))


@functools.lru_cache(maxsize=8)
def _folder_labels(name: str, root: str, channels: int) -> tuple[tuple[int, ...], int, int, int]:
    """:func:`_labels_of`, once per folder: a dataset and its subsets share one label list."""
    if name == "places205":
        from workers.data.places import places_facts

        places = places_facts(root)
        return tuple(places.labels("train")), places.num_classes, channels, len(places.samples["val"])
    if name == "cifar10":
        cifar = folders.cifar_facts(root)
        return cifar.train_labels, folders.CIFAR_CLASSES, 3, len(cifar.test_labels)
    folder = folders.image_folder_facts(root)
    return tuple(folder.labels("train")), len(folder.classes), 3, folder.size("val")


def dataset_spec(dataset_cfg: Mapping[str, Any]) -> DatasetSpec:
    """The configured dataset; ``ValueError`` for an unknown name or option,
    :class:`workers.data.folders.DataFolderError` for a missing or malformed folder.

    Cached per process by the configuration: planning asks for a dataset's facts dozens of
    times (every stage's iterations per epoch), and on an ImageNet-sized folder the label
    list and the subset size cost seconds each (issue 16). A failed check is not cached.
    """
    return _dataset_spec(json.dumps(dict(dataset_cfg), sort_keys=True))


@functools.lru_cache(maxsize=32)
def _dataset_spec(frozen: str) -> DatasetSpec:
    dataset_cfg = json.loads(frozen)
    name, options = _check_config(dataset_cfg)
    subset = _subset_args(dataset_cfg)
    if name == "digits":
        return DIGITS
    if name == "voc07":
        from workers.data import voc

        facts = voc.voc_facts(str(dataset_cfg["root"]))
        return DatasetSpec(name=name, num_classes=len(voc.VOC_CLASSES), in_channels=int(options["channels"]),
                           train_size=len(facts.train_ids), test_size=len(facts.test_ids),
                           load_cpu=lambda: _load_cpu(frozen), multi_label=True)
    labels, num_classes, channels, test_size = _labels_of(name, dataset_cfg)
    size = len(labels) if subset is None else folders.subset_size(labels, *subset)
    return DatasetSpec(name=name, num_classes=num_classes, in_channels=channels, train_size=size,
                       test_size=test_size, load_cpu=lambda: _load_cpu(frozen))


def folder_facts(dataset_cfg: Mapping[str, Any]) -> dict[str, int]:
    """``{"num_classes", "in_channels", "train_size", "test_size"}`` of a configured dataset,
    after checking its folder; no torch needed."""
    spec = dataset_spec(dataset_cfg)
    return {"num_classes": spec.num_classes, "in_channels": spec.in_channels,
            "train_size": spec.train_size, "test_size": spec.test_size}


def train_size(dataset_cfg: Mapping[str, Any]) -> int:
    """Number of training images of a dataset (its subset, if any), without loading the images."""
    return dataset_spec(dataset_cfg).train_size


def _load_cpu(frozen_cfg: str) -> DataSplit:
    cfg = json.loads(frozen_cfg)
    name, options = _check_config(cfg)
    if name == "digits":
        split = _load_digits()
    elif name == "cifar10":
        split = _load_cifar(str(cfg["root"]))
    elif name == "voc07":
        split = _load_voc(str(cfg["root"]), int(options["image_size"]), int(options["channels"]))
    elif name == "places205":
        split = _load_places(str(cfg["root"]), int(options["image_size"]), int(options["channels"]))
    else:
        split = _load_image_folder(str(cfg["root"]), int(options["image_size"]))
    subset = _subset_args(cfg)
    if subset is None:
        return split
    import torch

    keep = torch.tensor(folders.subset_positions(split.train_labels.tolist(), *subset), dtype=torch.int64)
    return replace(split, train_images=split.train_images[keep], train_labels=split.train_labels[keep])


@functools.cache
def _cached_split(frozen_cfg: str, device: str) -> DataSplit:
    split = _load_cpu(frozen_cfg)
    return split if device == "cpu" else split.to(device)


def load_split(dataset_cfg: Mapping[str, Any], device: torch.device | str = "cpu") -> DataSplit:
    """Return the dataset's train/test split on ``device`` (cached per process).

    The tensors are shared between callers: treat them as read-only. Image folders stay on
    disk (their images are decoded when sliced; see :mod:`workers.data.image_folder`).
    """
    dataset_spec(dataset_cfg)  # checks the config and the folder first
    return _cached_split(json.dumps(dict(dataset_cfg), sort_keys=True), str(device))
