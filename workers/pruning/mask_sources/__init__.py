"""The registry of mask sources: where a pruning mask comes from (torch-free).

Each built-in source is one module of this package declaring ``SOURCE`` (a
:class:`~workers.pruning.mask_sources.base.MaskSource`: its task, its inits and its planning
rules) and, when it trains on a task of its own, ``TASK`` (a
:class:`~workers.tasks.registry.TaskDeclaration`). :data:`BUILTIN` lists those modules:
adding a source is adding its module and one line there (or calling
:func:`register_mask_source` from a module of your own; see
``docs/extending/mask-source.md``).
"""
from __future__ import annotations

import importlib

from workers.pruning.mask_sources.base import INITS, ImpSource, MaskSource, RandomSource
from workers.tasks.registry import DEFAULT_NEGATIVES, TASK_RECIPE_OPTIONS, TASKS, TaskDeclaration, register_task

#: the built-in mask-source modules, in the order their names are listed.
BUILTIN = ("labels", "rotnet", "exemplar", "s4l", "labels_10pct", "random_mask", "adjusted_random", "npid")

MASK_SOURCES: dict[str, MaskSource] = {}


def register_mask_source(source: MaskSource, task: TaskDeclaration | None = None) -> MaskSource:
    """Register ``source`` (and the task it declares, if any).

    Registering the same declaration twice is harmless; a different one under a taken
    name is a ``ValueError``.
    """
    if task is not None:
        register_task(task)
    if MASK_SOURCES.get(source.name, source) != source:
        raise ValueError(f"mask source {source.name!r} is already registered as {MASK_SOURCES[source.name]}")
    MASK_SOURCES[source.name] = source
    return source


for _name in BUILTIN:
    _module = importlib.import_module(f"{__name__}.{_name}")
    register_mask_source(_module.SOURCE, getattr(_module, "TASK", None))



def task_declaration(name: str) -> TaskDeclaration:
    """The declaration of task ``name``; ``ValueError`` naming the known tasks if unknown."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def subset_tasks() -> tuple[str, ...]:
    """The tasks whose training reads the labelled subset (``task_options.label_subset``)."""
    return tuple(name for name, task in TASKS.items() if task.label_subset)


__all__ = ["BUILTIN", "DEFAULT_NEGATIVES", "INITS", "MASK_SOURCES", "TASKS", "TASK_RECIPE_OPTIONS", "ImpSource",
           "MaskSource", "RandomSource", "TaskDeclaration",
           "register_mask_source", "register_task", "subset_tasks", "task_declaration"]
