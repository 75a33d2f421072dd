"""Places205 in the layout its distribution ships (torch-free).

``root`` holds what the two archives extract to::

    trainvalsplit_places205/train_places205.csv   "<relative path> <label>" per line, e.g.
    trainvalsplit_places205/val_places205.csv     "a/abbey/00000001.jpg 0" (labels 0..204)
    data/vision/torralba/deeplearning/images256/<relative path>

The classes are the labels (``max label of train + 1`` of them: 205 for the real lists);
the val list is the test split (the protocol of Zhou et al. and Goyal et al. 2019).
Checking 2.5 million files at plan time would take minutes on a network file system, so the
planner checks the list files and that the first image of each list is there; a missing image
is named when it is read. Every problem raises :class:`workers.data.folders.DataFolderError`
naming the file (and line).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from workers.data.folders import DataFolderError

LISTS_FOLDER = "trainvalsplit_places205"
LIST_FILES = {"train": "train_places205.csv", "val": "val_places205.csv"}
IMAGES_FOLDER = Path("data", "vision", "torralba", "deeplearning", "images256")


@dataclass(frozen=True)
class PlacesFacts:
    """The images folder, the number of classes and ``(relative path, label)`` of each split."""

    images: Path
    num_classes: int
    #: split ("train", "val") -> ((relative path, label), ...) in list order.
    samples: dict

    def labels(self, split: str) -> list[int]:
        """The label of every image of ``split``, in list order."""
        return [label for _, label in self.samples[split]]


def read_list(path: Path) -> tuple[tuple[str, int], ...]:
    """``(relative path, label)`` of every line of a Places205 list file (checked)."""
    if not path.is_file():
        raise DataFolderError(f"{path}: missing; expected Places205's list file ('<relative path> <label>' per line)")
    rows = []
    for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[1].isdigit():
            raise DataFolderError(f"{path}:{line_no}: expected '<relative path> <label>', got {line.strip()!r}")
        relative = PurePosixPath(fields[0])
        if relative.is_absolute() or ".." in relative.parts:
            raise DataFolderError(f"{path}:{line_no}: {fields[0]!r} must be a path inside the images folder")
        rows.append((fields[0], int(fields[1])))
    if not rows:
        raise DataFolderError(f"{path}: no images listed; expected '<relative path> <label>' per line")
    return tuple(rows)


@functools.lru_cache(maxsize=8)
def places_facts(root: str) -> PlacesFacts:
    """Check a Places205 root (list files, images folder, the first image of each list) and read its lists."""
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataFolderError(f"{root_path}: no such folder; expected Places205's {LISTS_FOLDER}/ and "
                              f"{IMAGES_FOLDER}/")
    images = root_path / IMAGES_FOLDER
    if not images.is_dir():
        raise DataFolderError(f"{images}: no such folder; expected the images the list files name")
    samples = {split: read_list(root_path / LISTS_FOLDER / name) for split, name in LIST_FILES.items()}
    num_classes = max(label for _, label in samples["train"]) + 1
    for split, rows in samples.items():
        list_path = root_path / LISTS_FOLDER / LIST_FILES[split]
        bad = next(((i, label) for i, (_, label) in enumerate(rows, 1) if label >= num_classes), None)
        if bad is not None:
            raise DataFolderError(f"{list_path}: label {bad[1]} of image {bad[0]} is not among the train list's "
                                  f"labels 0..{num_classes - 1}")
        if not os.path.isfile(images / rows[0][0]):
            raise DataFolderError(f"{images / rows[0][0]}: missing; it is the first image of {list_path}")
    return PlacesFacts(images, num_classes, samples)
