"""Torch-free facts about what the worker can run, for validation and planning.

The orchestrator checks sweep files against these names without importing torch; the
worker's own registries (``workers.data``, ``workers.models``) must list the same names
(a test checks that they do).
"""
from __future__ import annotations

import math

#: dataset name -> facts the planner needs (train split size for rewind points in epochs).
DATASETS = {
    "digits": {"train_size": 1347, "test_size": 450, "num_classes": 10, "in_channels": 1},
}

#: architecture name -> the keyword arguments it accepts besides its output size.
ARCHITECTURES = {
    "small_cnn": ("width",),
}

#: training tasks a dense or IMP stage can train on.
TASKS = ("labels", "rotnet")


def iterations_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: the last, smaller batch is kept."""
    return math.ceil(train_size / batch_size)
