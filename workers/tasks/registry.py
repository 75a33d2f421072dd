"""The task registry: what a network can be trained to predict, declared without torch.

A :class:`TaskDeclaration` names a task, where its torch implementation lives
(``"module:attribute"``, imported only when a stage trains) and the facts planning
needs: whether its head predicts the dataset's classes (``label_head``), whether its
training reads the labelled subset (``label_subset``: the subset tasks), whether it
trains on that subset only (``subset_only``), how many samples its batches make of each
image (``samples_per_image``) and which recipe keys only it reads (``recipe_options``).

Tasks are registered by the mask-source modules that train on them: read the registry
through :mod:`workers.pruning.mask_sources` (``TASKS``, ``task_declaration``), which registers
the built-ins when imported.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskDeclaration:
    """One registered task: its name, torch implementation path and planning facts."""

    name: str
    #: ``"module:attribute"`` of its :class:`workers.tasks.objectives.Task`, or of a function returning
    #: it (so a torch-free module can declare a task and build it, importing torch, on use).
    implementation: str
    #: whether the head predicts the dataset's classes (a winning ticket then keeps it).
    label_head: bool = False
    #: whether its training reads ``task_options.label_subset`` (a subset task).
    label_subset: bool = False
    #: whether it trains on the labelled subset only (so an epoch counts the subset's images).
    subset_only: bool = False
    #: samples a batch makes of each image (RotNet and S4L: its 4 rotations; Exemplar: 2 views).
    samples_per_image: int = 1
    #: recipe keys only this task reads (:data:`TASK_RECIPE_OPTIONS`); a recipe of another task refuses them.
    recipe_options: tuple[str, ...] = ()

    def load(self) -> Any:
        """The torch implementation (imports its module; calls the function if it is one)."""
        module, _, attribute = self.implementation.partition(":")
        implementation = getattr(importlib.import_module(module), attribute)
        return implementation() if callable(implementation) else implementation


#: the recipe keys a task may declare, each with the default that leaves the recipe as without it:
#: ``negatives`` (NPID: negatives drawn per positive) and ``batch_counts`` (a task of several samples
#: per image: whether ``batch_size`` counts ``images`` or ``samples``).
DEFAULT_NEGATIVES = 4096
TASK_RECIPE_OPTIONS: dict[str, object] = {"negatives": DEFAULT_NEGATIVES, "batch_counts": "images"}

#: every registered task by name, in registration order (the built-ins first).
TASKS: dict[str, TaskDeclaration] = {}


def register_task(task: TaskDeclaration) -> TaskDeclaration:
    """Register ``task``; registering the same declaration twice is harmless, a different one
    under a taken name a ``ValueError``."""
    if TASKS.get(task.name, task) != task:
        raise ValueError(f"task {task.name!r} is already registered as {TASKS[task.name]}")
    TASKS[task.name] = task
    return task
