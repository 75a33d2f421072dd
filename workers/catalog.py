"""What the workers offer, readable without importing torch (for validating sweep files).

- ``DATASETS``: name -> ``{"num_classes", "in_channels", "train_size", "test_size"}``;
- ``ARCHITECTURES``: name -> its keyword options and their defaults;
- ``TASKS``: the training tasks;
- ``STAGE_KINDS`` and ``MASK_RULE_KINDS``: what a stage.json may ask for;
- :func:`iterations_per_epoch`: optimizer steps per epoch (the last batch may be smaller).

The test suite checks these lists against the real registries.
"""
from __future__ import annotations

from workers.data import DATASETS as _DATASET_SPECS
from workers.schedule import iterations_per_epoch

DATASETS: dict[str, dict[str, int]] = {
    name: {"num_classes": spec.num_classes, "in_channels": spec.in_channels,
           "train_size": spec.train_size, "test_size": spec.test_size}
    for name, spec in _DATASET_SPECS.items()
}
ARCHITECTURES: dict[str, dict[str, object]] = {"small_cnn": {"width": 16}}
TASKS: tuple[str, ...] = ("labels", "rotnet", "exemplar", "s4l", "labels_10pct")
STAGE_KINDS: tuple[str, ...] = ("dense", "rewind", "imp", "random_mask", "eval", "features", "linear_eval",
                                 "finetune")
MASK_RULE_KINDS: tuple[str, ...] = ("full", "prune_round", "one_shot", "given", "random", "adjusted_random")

__all__ = ["DATASETS", "ARCHITECTURES", "TASKS", "STAGE_KINDS", "MASK_RULE_KINDS",
           "iterations_per_epoch"]
