"""The published sizes of the standard datasets, for planning before their folders exist.

``prunesweep plan`` reads every fact it needs (classes, train and test sizes) from the data
folder (:func:`workers.data.datasets.folder_facts`). Inside :func:`sizes_when_absent`, a dataset of
:data:`KNOWN` whose folder does not exist at all is described from these figures instead,
and the folder is noted so that the caller can say so; a folder that exists but is
malformed is still an error, and outside the context (``launch``) nothing changes: a
missing folder is refused as before.

Sources: ImageNet ILSVRC-2012 (Russakovsky et al. 2015): 1,281,167 training and 50,000
validation images, 1,000 classes; CIFAR-10 (Krizhevsky 2009): 50,000 / 10,000, 10 classes;
Places205 (Zhou et al. 2014, the split of Goyal et al. 2019's benchmark): 2,448,873 training
and 20,500 validation images (100 per class), 205 classes; PASCAL VOC 2007 (Everingham et
al. 2010): 5,011 trainval and 4,952 test images, 20 classes. The paper-protocol notes give
no sizes of their own.

A ``subset`` follows from them: ``images_per_class`` keeps exactly ``round(fraction * N)``
images (as :func:`workers.data.folders.subset_positions` does), ``classes`` keeps
``round(fraction * C)`` classes, whose images are counted here as the average class's
(the exact count needs the folder). Torch-free.
"""
from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from workers.data import datasets as data
from workers.data.folders import DataFolderError


@dataclass(frozen=True)
class KnownDataset:
    """A standard dataset's published split sizes."""

    train_size: int
    test_size: int
    num_classes: int
    in_channels: int = 3


#: name (as in a sweep's ``dataset.name``) -> its published sizes.
KNOWN: dict[str, KnownDataset] = {
    "imagenet": KnownDataset(train_size=1_281_167, test_size=50_000, num_classes=1_000),
    "cifar10": KnownDataset(train_size=50_000, test_size=10_000, num_classes=10),
    "places205": KnownDataset(train_size=2_448_873, test_size=20_500, num_classes=205),
    "voc07": KnownDataset(train_size=5_011, test_size=4_952, num_classes=20),
}

#: the absent folders described from KNOWN in the current context (None: no fallback allowed).
_ABSENT: contextvars.ContextVar[Optional[dict[str, str]]] = contextvars.ContextVar("absent_data_folders",
                                                                                    default=None)


def known_facts(dataset_cfg: Mapping[str, Any]) -> dict[str, int]:
    """``{"num_classes", "in_channels", "train_size", "test_size"}`` of a configured dataset of
    :data:`KNOWN` from its published sizes (its ``subset`` applied); ``KeyError`` for another name."""
    known = KNOWN[dataset_cfg["name"]]
    train = known.train_size
    subset = dataset_cfg.get("subset")
    if subset is not None:
        kind, fraction = subset.get("kind", "images_per_class"), float(subset.get("fraction", 0.1))
        if kind == "classes":
            classes = max(1, int(round(fraction * known.num_classes)))
            train = max(1, round(known.train_size * classes / known.num_classes))
        else:
            train = max(1, int(round(fraction * known.train_size)))
    return {"num_classes": known.num_classes, "in_channels": known.in_channels, "train_size": train,
            "test_size": known.test_size}


def dataset_facts(dataset_cfg: Mapping[str, Any]) -> dict[str, int]:
    """:func:`workers.data.datasets.folder_facts`, or inside :func:`sizes_when_absent` the published
    sizes of a :data:`KNOWN` dataset whose folder does not exist."""
    try:
        return data.folder_facts(dataset_cfg)
    except DataFolderError:
        absent = _ABSENT.get()
        root = dataset_cfg.get("root") if isinstance(dataset_cfg, Mapping) else None
        if absent is None or not root or dataset_cfg.get("name") not in KNOWN or Path(root).expanduser().exists():
            raise
        absent.setdefault(str(root), str(dataset_cfg["name"]))
        return known_facts(dataset_cfg)


@contextmanager
def sizes_when_absent() -> Iterator[dict[str, str]]:
    """Within this block, datasets of :data:`KNOWN` whose folder is absent take their published
    sizes; yields the absent folders found so far (folder -> dataset name)."""
    absent: dict[str, str] = {}
    token = _ABSENT.set(absent)
    try:
        yield absent
    finally:
        _ABSENT.reset(token)


def describe(name: str) -> str:
    """``imagenet: 1,281,167 train / 50,000 val images, 1,000 classes``."""
    known = KNOWN[name]
    return f"{name}: {known.train_size:,} train / {known.test_size:,} val images, {known.num_classes:,} classes"
