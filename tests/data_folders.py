"""Small datasets written in the real on-disk layouts, for tests (and for planning the
paper's sweeps without the real data).

- :func:`write_cifar`: torchvision's ``cifar-10-batches-py`` (pickled batches);
- :func:`write_image_folder`: ``train/<class>/*.jpg|png`` and ``val/<class>/*``.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


def write_cifar(root: Path, per_batch: int = 12, seed: int = 0) -> Path:
    """A CIFAR-10 folder with ``per_batch`` random images per batch (labels cycle 0..9); returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR_BATCHES):
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [(i * per_batch + j) % 10 for j in range(per_batch)]
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"class{c}".encode() for c in range(10)]}, handle)
    return Path(root)


def write_image_folder(root: Path, classes: int = 3, train_per_class: int = 4, val_per_class: int = 2,
                       size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """An ImageFolder root with random RGB images (JPEG and PNG alternately); returns ``root``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = Path(root) / split / f"n{c:04d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"img{i}.{'jpg' if i % 2 == 0 else 'png'}")
    return Path(root)
