"""The task registry: what a network can be trained to predict, declared without torch.

A :class:`TaskDeclaration` names a task, where its torch implementation lives
(``"module:attribute"``, imported only when a stage trains) and the facts planning
needs: whether its head predicts the dataset's classes (``label_head``), whether its
training reads the labelled subset (``label_subset``: the subset tasks) and whether it
trains on that subset only (``subset_only``).

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

    def load(self) -> Any:
        """The torch implementation (imports its module; calls the function if it is one)."""
        module, _, attribute = self.implementation.partition(":")
        implementation = getattr(importlib.import_module(module), attribute)
        return implementation() if callable(implementation) else implementation


#: every registered task by name, in registration order (the built-ins first).
TASKS: dict[str, TaskDeclaration] = {}


def register_task(task: TaskDeclaration) -> TaskDeclaration:
    """Register ``task``; registering the same declaration twice is harmless, a different one
    under a taken name a ``ValueError``."""
    if TASKS.get(task.name, task) != task:
        raise ValueError(f"task {task.name!r} is already registered as {TASKS[task.name]}")
    TASKS[task.name] = task
    return task
