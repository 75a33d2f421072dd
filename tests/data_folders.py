"""Small datasets written in the real on-disk layouts, for tests (and for planning the
paper's sweeps without the real data).

- :func:`write_cifar`: torchvision's ``cifar-10-batches-py`` (pickled batches);
- :func:`write_image_folder`: ``train/<class>/*.jpg|png`` and ``val/<class>/*``;
- :func:`write_voc07`: ``VOCdevkit/VOC2007/`` (XML annotations with several objects per image,
  some difficult; the image-set and per-class list files; JPEGs);
- :func:`write_places205`: Places205's ``trainvalsplit_places205/*.csv`` list files and its
  ``data/vision/torralba/deeplearning/images256/`` folder.
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


#: the classes :func:`write_voc07` annotates (a few of the 20, to keep the tests small).
VOC_USED = ("bird", "cat", "dog", "person")


def _voc_objects(i: int) -> list[tuple[str, int]]:
    """``(class, difficult)`` of the objects of image ``i``: one to three classes, some difficult."""
    objects = [(VOC_USED[i % 4], 0)]
    if i % 3 != 0:
        objects.append((VOC_USED[(i + 1) % 4], 1 if i % 5 == 1 else 0))
    if i % 4 == 2:
        objects += [(VOC_USED[(i + 2) % 4], 1), (VOC_USED[(i + 2) % 4], 0)]  # difficult and not: present
    return objects


def write_voc07(root: Path, trainval: int = 24, test: int = 12, size: tuple[int, int] = (20, 16),
                seed: int = 0) -> Path:
    """A VOCdevkit tree (``root/VOCdevkit/VOC2007``) of random JPEGs whose annotations follow
    :func:`_voc_objects`; the per-class files hold the devkit's labels; returns ``root``."""
    from PIL import Image

    from workers.data.voc import VOC_CLASSES

    rng = np.random.default_rng(seed)
    folder = Path(root) / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    ids = {"trainval": [f"{i:06d}" for i in range(1, trainval + 1)],
           "test": [f"{i:06d}" for i in range(trainval + 1, trainval + test + 1)]}
    ids["train"], ids["val"] = ids["trainval"][::2], ids["trainval"][1::2]
    labels: dict[str, dict[str, int]] = {}
    for i, image_id in enumerate(ids["trainval"] + ids["test"]):
        objects = _voc_objects(i)
        xml = "".join(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                      f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                      f"<ymax>9</ymax></bndbox></object>" for name, difficult in objects)
        (folder / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename><size><width>{size[0]}"
            f"</width><height>{size[1]}</height><depth>3</depth></size><segmented>0</segmented>{xml}</annotation>")
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "JPEGImages" / f"{image_id}.jpg")
        row = {}
        for name in VOC_CLASSES:
            flags = [difficult for n, difficult in objects if n == name]
            row[name] = -1 if not flags else 1 if 0 in flags else 0
        labels[image_id] = row
    for set_name, members in ids.items():
        (folder / "ImageSets" / "Main" / f"{set_name}.txt").write_text("".join(f"{m}\n" for m in members))
        for name in VOC_CLASSES:
            (folder / "ImageSets" / "Main" / f"{name}_{set_name}.txt").write_text(
                "".join(f"{m} {labels[m][name]:2d}\n" for m in members))
    return Path(root)


PLACES_CLASSES = ("a/abbey", "b/bedroom", "c/coast")


def write_places205(root: Path, train_per_class: int = 4, val_per_class: int = 2, size: tuple[int, int] = (20, 16),
                    seed: int = 0) -> Path:
    """A Places205 root (its list files and images256/ folder) with random JPEGs of
    :data:`PLACES_CLASSES`; returns ``root``."""
    from PIL import Image

    from workers.data.places import IMAGES_FOLDER, LIST_FILES, LISTS_FOLDER

    rng = np.random.default_rng(seed)
    (Path(root) / LISTS_FOLDER).mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        lines = []
        for label, name in enumerate(PLACES_CLASSES):
            folder = Path(root) / IMAGES_FOLDER / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(start, start + count):
                pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:08d}.jpg")
                lines.append(f"{name}/{i:08d}.jpg {label}\n")
        start += count
        (Path(root) / LISTS_FOLDER / LIST_FILES[split]).write_text("".join(lines))
    return Path(root)
