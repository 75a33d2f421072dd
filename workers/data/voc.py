"""PASCAL VOC 2007 in its VOCdevkit layout, read as 20-class multi-label classification (torch-free).

The layout the devkit's archives extract to (``root`` may be the ``VOC2007`` folder, a folder
holding it, or a folder holding ``VOCdevkit/VOC2007``)::

    VOC2007/Annotations/<id>.xml              one per image: its objects, each <name> and <difficult>
    VOC2007/ImageSets/Main/{train,val,trainval,test}.txt      image ids, one a line
    VOC2007/ImageSets/Main/<class>_<set>.txt  optional: "<id> <1|0|-1>" per image (the devkit's labels)
    VOC2007/JPEGImages/<id>.jpg

The protocol (the devkit's and Goyal et al. 2019's): train on ``trainval``, test on ``test``.
An image's label for a class is the devkit's: ``1`` if a non-difficult object of the class is
annotated in it, ``0`` if its only objects of the class are marked difficult, ``-1`` if none;
an image carries every class annotated in it. Label 0 is *ignored*: it counts neither as a
positive nor as a negative when an average precision is computed or a classifier is trained
(as the devkit's evaluation does). When the per-class list files are there, the labels read
from the annotations are checked against them.

Annotations are parsed with the standard library, refusing any DTD (so no entity can be
declared, let alone expanded) and any file over :data:`MAX_ANNOTATION_BYTES`. Every problem
raises :class:`workers.data.folders.DataFolderError` naming the file.
"""
from __future__ import annotations

import functools
import os
import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from workers.data.folders import DataFolderError

#: the 20 classes in the devkit's order (a label row's column order).
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
VOC_SETS = ("train", "val", "trainval", "test")
#: the sets the protocol trains and tests on.
TRAIN_SET, TEST_SET = "trainval", "test"
POSITIVE, DIFFICULT, NEGATIVE = 1, 0, -1
#: a VOC annotation is a few kB; anything far larger is not one.
MAX_ANNOTATION_BYTES = 1 << 20
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def voc_folder(root: str | os.PathLike) -> Path:
    """The ``VOC2007`` folder of ``root``: ``root`` itself, ``root/VOC2007`` or ``root/VOCdevkit/VOC2007``."""
    root = Path(root).expanduser()
    for folder in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (folder / "Annotations").is_dir() and (folder / "ImageSets" / "Main").is_dir():
            return folder
    if not root.is_dir():
        raise DataFolderError(f"{root}: no such folder; expected the VOCdevkit layout (VOCdevkit/VOC2007/"
                              "Annotations/*.xml, ImageSets/Main/{trainval,test}.txt, JPEGImages/*.jpg)")
    raise DataFolderError(f"{root}: no VOC2007/Annotations/ and VOC2007/ImageSets/Main/ here, nor under VOC2007/ "
                          "or VOCdevkit/VOC2007/; expected the VOCdevkit layout")


def read_image_set(folder: Path, name: str) -> tuple[str, ...]:
    """The image ids listed in ``ImageSets/Main/<name>.txt`` (checked: ids are plain names, none repeats)."""
    path = folder / "ImageSets" / "Main" / f"{name}.txt"
    if not path.is_file():
        raise DataFolderError(f"{path}: missing; expected the image ids of the {name} set, one a line")
    ids = [line.split()[0] for line in path.read_text(errors="replace").splitlines() if line.strip()]
    for line_no, image_id in enumerate(ids, 1):
        if not _ID.match(image_id) or image_id in (".", ".."):
            raise DataFolderError(f"{path}:{line_no}: {image_id!r} is not an image id (letters, digits, _ . -)")
    if not ids:
        raise DataFolderError(f"{path}: empty; expected the image ids of the {name} set, one a line")
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise DataFolderError(f"{path}: image id {repeated!r} is listed twice")
    return tuple(ids)


def parse_annotation(path: Path) -> dict[str, bool]:
    """``{class: difficult only}`` for every class annotated in the VOC XML file ``path``."""
    try:
        size = path.stat().st_size
    except OSError:
        raise DataFolderError(f"{path}: missing; expected the image's VOC annotation (XML)") from None
    if size > MAX_ANNOTATION_BYTES:
        raise DataFolderError(f"{path}: {size} bytes; a VOC annotation is at most {MAX_ANNOTATION_BYTES}")
    text = path.read_bytes()
    if b"<!DOCTYPE" in text.upper() or b"<!ENTITY" in text.upper():
        raise DataFolderError(f"{path}: declares a DTD or entities; a VOC annotation has none (refused)")
    try:
        tree = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise DataFolderError(f"{path}: not well-formed XML ({error})") from None
    if tree.tag != "annotation":
        raise DataFolderError(f"{path}: root element <{tree.tag}>; expected <annotation>")
    classes: dict[str, bool] = {}
    for position, obj in enumerate(tree.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataFolderError(f"{path}: object {position} has name {name!r}; expected one of the 20 VOC "
                                  f"classes ({', '.join(VOC_CLASSES)})")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DataFolderError(f"{path}: object {position} has <difficult>{difficult}</difficult>; expected 0 or 1")
        classes[name] = classes.get(name, True) and difficult == "1"
    return classes


def label_row(classes: dict[str, bool]) -> tuple[int, ...]:
    """The devkit's label of each class (1 present, 0 difficult only, -1 absent) from :func:`parse_annotation`."""
    return tuple(NEGATIVE if name not in classes else DIFFICULT if classes[name] else POSITIVE
                 for name in VOC_CLASSES)


@dataclass(frozen=True)
class VocFacts:
    """The ``VOC2007`` folder and the ids of the training (trainval) and test sets (checked)."""

    folder: Path
    train_ids: tuple[str, ...]
    test_ids: tuple[str, ...]

    def image(self, image_id: str) -> str:
        """The image's path relative to :attr:`folder`."""
        return f"JPEGImages/{image_id}.jpg"


@functools.lru_cache(maxsize=8)
def voc_facts(root: str) -> VocFacts:
    """Check a VOC2007 folder (the trainval and test lists, disjoint, trainval the union of
    train and val where both are listed, an annotation and a JPEG for every listed id)
    without parsing annotations; the planner's view."""
    folder = voc_folder(root)
    if not (folder / "JPEGImages").is_dir():
        raise DataFolderError(f"{folder / 'JPEGImages'}: no such folder; expected <id>.jpg for every listed image")
    train, test = read_image_set(folder, TRAIN_SET), read_image_set(folder, TEST_SET)
    annotations = {e.name for e in os.scandir(folder / "Annotations")}
    images = {e.name for e in os.scandir(folder / "JPEGImages")}
    for name, ids in ((TRAIN_SET, train), (TEST_SET, test)):
        for image_id in ids:
            if f"{image_id}.xml" not in annotations:
                raise DataFolderError(f"{folder / 'Annotations' / (image_id + '.xml')}: missing; "
                                      f"{image_id} is listed in ImageSets/Main/{name}.txt")
            if f"{image_id}.jpg" not in images:
                raise DataFolderError(f"{folder / 'JPEGImages' / (image_id + '.jpg')}: missing; "
                                      f"{image_id} is listed in ImageSets/Main/{name}.txt")
    main = folder / "ImageSets" / "Main"
    if (main / "train.txt").is_file() and (main / "val.txt").is_file():
        train_part, val_part = read_image_set(folder, "train"), read_image_set(folder, "val")
        if sorted(train_part + val_part) != sorted(train):
            raise DataFolderError(f"{main / 'trainval.txt'}: not the union of train.txt and val.txt "
                                  f"({len(train)} ids vs {len(train_part)} + {len(val_part)})")
    overlap = sorted(set(train) & set(test))
    if overlap:
        raise DataFolderError(f"{folder / 'ImageSets' / 'Main' / 'test.txt'}: image {overlap[0]} is also in "
                              "trainval.txt; the test set must be disjoint from it")
    return VocFacts(folder, train, test)


def _check_class_list(folder: Path, set_name: str, ids: tuple[str, ...], rows: list[tuple[int, ...]]) -> None:
    """Compare the labels read from the annotations with ``<class>_<set>.txt`` where the devkit ships it."""
    for c, name in enumerate(VOC_CLASSES):
        path = folder / "ImageSets" / "Main" / f"{name}_{set_name}.txt"
        if not path.is_file():
            continue
        listed: dict[str, int] = {}
        for line_no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("1", "0", "-1"):
                raise DataFolderError(f"{path}:{line_no}: expected '<image id> <1|0|-1>', got {line.strip()!r}")
            listed[fields[0]] = int(fields[1])
        for image_id, row in zip(ids, rows, strict=True):
            if listed.get(image_id, row[c]) != row[c]:
                raise DataFolderError(f"{path}: {image_id} is labelled {listed[image_id]} but its annotation "
                                      f"Annotations/{image_id}.xml gives {row[c]} (1 present, 0 difficult only, "
                                      "-1 absent)")


@functools.lru_cache(maxsize=8)
def voc_labels(root: str, set_name: str) -> tuple[tuple[int, ...], ...]:
    """The label row (:func:`label_row`) of every image of ``trainval`` or ``test``, in list order."""
    facts = voc_facts(root)
    ids = facts.train_ids if set_name == TRAIN_SET else facts.test_ids
    rows = [label_row(parse_annotation(facts.folder / "Annotations" / f"{image_id}.xml")) for image_id in ids]
    _check_class_list(facts.folder, set_name, ids, rows)
    return tuple(rows)
