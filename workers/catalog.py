"""What the workers offer, readable without importing torch (for validating sweep files).

- ``DATASETS``: name -> ``{"num_classes", "in_channels", "train_size", "test_size"}``, the
  values ``None`` where they depend on the folder (``cifar10``, ``imagenet``, ``places205``,
  ``voc07``, ``image_folder``): :func:`dataset_facts` gives them for a dataset config
  (``{name, root, subset?, image_size?}``) after checking its folder (a missing or malformed
  one raises :class:`DataFolderError`, a ``ValueError``, naming the file and what is expected);
- ``DATASET_OPTIONS``: name -> its keys besides ``name`` (``root``, ``subset``, ``image_size``);
- ``SUBSET_KINDS``: the dataset ``subset.kind`` values (``images_per_class``, ``classes``);
- ``ARCHITECTURES``: name -> its keyword options and their defaults (``small_cnn``;
  ``resnet18`` and ``vgg19``, the CIFAR variants; ``resnet50`` and ``alexnet``, torchvision's);
- ``CONVOLUTIONS``: name -> its number of convolutions (what a layer-wise rule may prune);
- ``TASKS``: the training tasks;
- ``STAGE_KINDS`` and ``MASK_RULE_KINDS``: what a stage.json may ask for;
- :func:`iterations_per_epoch`: optimizer steps per epoch (the last batch may be smaller).

The test suite checks these lists against the real registries.
"""
from __future__ import annotations

from workers.data import DATASETS as _FIXED
from workers.data import KINDS as _KINDS
from workers.data import dataset_facts
from workers.folders import SUBSET_KINDS, DataFolderError
from workers.schedule import iterations_per_epoch

DATASETS: dict[str, dict[str, int | None]] = {
    name: ({"num_classes": _FIXED[name].num_classes, "in_channels": _FIXED[name].in_channels,
            "train_size": _FIXED[name].train_size, "test_size": _FIXED[name].test_size} if name in _FIXED
           else {"num_classes": None, "in_channels": 3, "train_size": None, "test_size": None})
    for name in _KINDS
}
DATASET_OPTIONS: dict[str, tuple[str, ...]] = {
    name: (*(("root",) if kind.needs_root else ()), *(("subset",) if kind.takes_subset else ()), *kind.options)
    for name, kind in _KINDS.items()
}
ARCHITECTURES: dict[str, dict[str, object]] = {"small_cnn": {"width": 16}, "resnet18": {}, "vgg19": {},
                                               "resnet50": {}, "alexnet": {}}
#: convolutions of each architecture (whatever its options), the bound of ``pruning.layers``.
CONVOLUTIONS: dict[str, int] = {"small_cnn": 4, "resnet18": 20, "vgg19": 16, "resnet50": 53, "alexnet": 5}
TASKS: tuple[str, ...] = ("labels", "rotnet", "exemplar", "s4l", "labels_10pct")
STAGE_KINDS: tuple[str, ...] = ("dense", "rewind", "imp", "random_mask", "eval", "features", "linear_eval",
                                 "finetune")
MASK_RULE_KINDS: tuple[str, ...] = ("full", "prune_round", "one_shot", "given", "random", "adjusted_random")

__all__ = ["DATASETS", "DATASET_OPTIONS", "SUBSET_KINDS", "DataFolderError", "dataset_facts", "ARCHITECTURES", "CONVOLUTIONS", "TASKS", "STAGE_KINDS", "MASK_RULE_KINDS",
           "iterations_per_epoch"]
