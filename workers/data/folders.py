"""On-disk datasets checked and described without torch (the sweep validator's view).

Two layouts, both read from a local folder (nothing is ever downloaded):

- **CIFAR-10** in torchvision's format: ``ROOT/cifar-10-batches-py/`` holding the pickled
  ``data_batch_1`` ... ``data_batch_5`` and ``test_batch`` (each a dict with ``b"data"``,
  an ``(N, 3072)`` uint8 array, and ``b"labels"``, N ints in 0..9). ``ROOT`` may also be
  the ``cifar-10-batches-py`` folder itself.
- **ImageFolder**: ``ROOT/train/<class>/<image>`` and ``ROOT/val/<class>/<image>``, one
  folder per class (class index = rank of the folder name among ``train/``'s, sorted),
  images with a usual extension (jpg, jpeg, png, ppm, bmp, pgm, tif, tiff, webp). ImageNet
  ILSVRC-2012, VOC07 or Places205 re-arranged this way all load the same.

Every problem raises :class:`DataFolderError` naming the file or folder and what was
expected. Results are cached per process: the checks run once per ``plan``.
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_CLASSES = 10
CIFAR_PIXELS = 3 * 32 * 32
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
IMAGE_FOLDER_SPLITS = ("train", "val")


class DataFolderError(ValueError):
    """A data folder that is missing or not in the expected layout."""


def cifar_folder(root: str | os.PathLike) -> Path:
    """The ``cifar-10-batches-py`` folder of ``root`` (``root`` itself if it is that folder)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataFolderError(f"{root}: no such folder; expected a folder holding {CIFAR_FOLDER}/ "
                              "(torchvision's CIFAR-10 on-disk format)")
    if root.name == CIFAR_FOLDER:
        return root
    folder = root / CIFAR_FOLDER
    if not folder.is_dir():
        raise DataFolderError(f"{folder}: no such folder; expected torchvision's CIFAR-10 layout "
                              f"({CIFAR_FOLDER}/data_batch_1..5 and test_batch)")
    return folder


#: the only globals a CIFAR-10 batch may name: how numpy pickles an array, a dtype and a scalar
#: (under numpy 1's and numpy 2's module names), and the codec Python 3 uses for bytes in protocol 2.
_CIFAR_GLOBALS = frozenset({
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("_codecs", "encode"),
})


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles data only: dicts, lists, bytes, numbers and numpy arrays; any other global is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch holds only "
                                         "numpy arrays, lists, dicts, bytes and numbers")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[bytes, list[int]]:
    """``(pixels, labels)`` of one pickled CIFAR-10 batch: N*3072 bytes (CHW order) and N labels."""
    if not path.is_file():
        raise DataFolderError(f"{path}: missing; expected a pickled CIFAR-10 batch")
    try:
        with open(path, "rb") as handle:
            batch = _CifarUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # any unpickling failure means the file is not a batch
        raise DataFolderError(f"{path}: not a pickled CIFAR-10 batch ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataFolderError(f"{path}: expected a dict with keys b'data' and b'labels', got {keys}")
    data, labels = batch[b"data"], list(batch[b"labels"])
    shape = getattr(data, "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != CIFAR_PIXELS or shape[0] != len(labels):
        raise DataFolderError(f"{path}: b'data' must be an array of shape (N, {CIFAR_PIXELS}) with N = "
                              f"{len(labels)} (the number of labels), got {shape}")
    if str(getattr(data, "dtype", "")) != "uint8":
        raise DataFolderError(f"{path}: b'data' must hold uint8 pixels, got {getattr(data, 'dtype', None)}")
    bad = [label for label in labels if not (isinstance(label, int) and 0 <= label < CIFAR_CLASSES)]
    if bad:
        raise DataFolderError(f"{path}: b'labels' must be ints in 0..{CIFAR_CLASSES - 1}, got {bad[0]!r}")
    return data.tobytes(), labels


@dataclass(frozen=True)
class CifarFacts:
    """Labels of the train and test batches of a CIFAR-10 folder (checked)."""

    folder: Path
    train_labels: tuple[int, ...]
    test_labels: tuple[int, ...]


@functools.lru_cache(maxsize=8)
def cifar_facts(root: str) -> CifarFacts:
    """Check a CIFAR-10 folder (every batch unpickled and its shape checked) and return its labels."""
    folder = cifar_folder(root)
    train: list[int] = []
    for name in CIFAR_TRAIN_BATCHES:
        train += read_cifar_batch(folder / name)[1]
    return CifarFacts(folder, tuple(train), tuple(read_cifar_batch(folder / CIFAR_TEST_BATCH)[1]))


@dataclass(frozen=True)
class ImageFolderFacts:
    """The classes (sorted) and the image files of each split of an ImageFolder root."""

    root: Path
    classes: tuple[str, ...]
    #: split -> ((class folder, class index, its image file names sorted), ...) by folder name.
    listing: dict

    @functools.cached_property
    def samples(self) -> dict:
        """split -> ((relative path, class index), ...) in the listing's order.

        Built when first read (by a loader): planning needs the classes' sizes only, and on an
        ImageNet-sized folder a path per image is a good part of the listing's cost.
        """
        return {split: tuple((f"{split}/{name}/{image}", index) for name, index, images in groups
                             for image in images)
                for split, groups in self.listing.items()}

    def labels(self, split: str) -> list[int]:
        """The class index of every image of ``split``, in file order."""
        labels: list[int] = []
        for _, index, images in self.listing[split]:
            labels += [index] * len(images)
        return labels

    def size(self, split: str) -> int:
        """The number of images of ``split``."""
        return sum(len(images) for _, _, images in self.listing[split])


def _images_of(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder)
                  if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS))


@functools.lru_cache(maxsize=8)
def image_folder_facts(root: str) -> ImageFolderFacts:
    """Check an ImageFolder root (``train/`` and ``val/``, class folders holding images) and list it.

    Images are not opened here: a corrupt file is only found when it is read.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise DataFolderError(f"{root_path}: no such folder; expected an ImageFolder root with "
                              "train/<class>/<images> and val/<class>/<images>")
    listing: dict[str, tuple] = {}
    classes: tuple[str, ...] = ()
    for split in IMAGE_FOLDER_SPLITS:
        split_dir = root_path / split
        if not split_dir.is_dir():
            raise DataFolderError(f"{split_dir}: no such folder; expected {split}/<class>/<images> "
                                  "(one folder per class)")
        names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
        if not names:
            raise DataFolderError(f"{split_dir}: no class folders; expected {split}/<class>/<images>")
        if split == "train":
            classes = tuple(names)
        else:
            unknown = sorted(set(names) - set(classes))
            if unknown:
                raise DataFolderError(f"{split_dir / unknown[0]}: class folder absent from train/; "
                                      f"expected val/ classes among train/'s {len(classes)} classes")
        index = {name: i for i, name in enumerate(classes)}
        rows = []
        for name in names:
            images = _images_of(split_dir / name)
            if not images:
                raise DataFolderError(f"{split_dir / name}: no images; expected files ending in "
                                      f"{', '.join(IMAGE_EXTENSIONS)}")
            rows.append((name, index[name], tuple(images)))
        listing[split] = tuple(rows)
    return ImageFolderFacts(root_path, classes, listing)


# ---- reproducible 10% subsets, chosen without torch --------------------------------------

SUBSET_KINDS = ("images_per_class", "classes")


def _rank(seed: int, *parts: object) -> str:
    return hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()


def _quotas(counts: list[int], fraction: float) -> list[int]:
    """Largest-remainder rounding of ``fraction * count`` per class, summing to ``round(fraction * total)``."""
    exact = [fraction * n for n in counts]
    quotas = [int(x) for x in exact]
    short = int(round(fraction * sum(counts))) - sum(quotas)
    for c in sorted(range(len(counts)), key=lambda c: (-(exact[c] - quotas[c]), c))[:max(short, 0)]:
        quotas[c] += 1
    return quotas


def subset_size(labels: Sequence[int], kind: str, fraction: float, seed: int) -> int:
    """``len(subset_positions(labels, kind, fraction, seed))``, without hashing every image.

    ``images_per_class`` holds the sum of the per-class quotas whichever images are drawn;
    ``classes`` needs the hash of each class only. Planning needs this size alone.
    """
    if kind not in SUBSET_KINDS:
        raise ValueError(f"unknown subset kind {kind!r}; allowed: {', '.join(SUBSET_KINDS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
    counts = Counter(labels)
    classes = sorted(counts)
    if kind == "classes":
        chosen = sorted(classes, key=lambda c: _rank(seed, c))[:max(1, int(round(fraction * len(classes))))]
        return sum(counts[c] for c in chosen)
    return sum(_quotas([counts[c] for c in classes], fraction))


def subset_positions(labels: list[int], kind: str, fraction: float, seed: int) -> list[int]:
    """Sorted positions in ``labels`` of a reproducible subset of a training set.

    - ``images_per_class``: in every class, the ``fraction * n_c`` images (largest-remainder
      rounding, so the subset holds exactly ``round(fraction * N)`` images) that come first
      when the class's images are ordered by ``sha256(seed:class:position)``;
    - ``classes``: ``round(fraction * C)`` classes (at least one), those first in the order
      of ``sha256(seed:class)``, with all their images.

    Hash orders instead of a torch generator keep the choice (and so the training-set size
    the planner needs) computable without torch; the same seed always gives the same subset.
    """
    if kind not in SUBSET_KINDS:
        raise ValueError(f"unknown subset kind {kind!r}; allowed: {', '.join(SUBSET_KINDS)}")
    if not 0 < fraction <= 1:
        raise ValueError(f"subset fraction must be in (0, 1], got {fraction}")
    members: dict[int, list[int]] = {}
    for position, label in enumerate(labels):
        members.setdefault(int(label), []).append(position)
    classes = sorted(members)
    if kind == "classes":
        chosen = sorted(classes, key=lambda c: _rank(seed, c))[:max(1, int(round(fraction * len(classes))))]
        return sorted(p for c in chosen for p in members[c])
    quotas = _quotas([len(members[c]) for c in classes], fraction)
    picked: list[int] = []
    for c, quota in zip(classes, quotas, strict=True):
        picked += sorted(members[c], key=lambda p: _rank(seed, c, p))[:quota]
    return sorted(picked)
