"""A training recipe as the worker reads it: its keys, their defaults, and the images of one step.

Torch-free: :mod:`workers.catalog` exports :func:`images_per_step`, so the planner counts the
steps of an epoch (and so the rewinding step k) exactly as the training loop takes them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.pruning.mask_sources import task_declaration
from workers.tasks.registry import TASK_RECIPE_OPTIONS
from workers.training.schedule import validate_schedule

OPTIMIZERS = ("sgd", "adam")
BATCH_READINGS = ("images", "samples")
_RECIPE_KEYS = {"epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                "nesterov", "schedule", "eval_every", *TASK_RECIPE_OPTIONS}


def validate_recipe(recipe: Mapping[str, Any]) -> dict:
    """Return the recipe with defaults filled in; ``ValueError`` naming the bad key otherwise.

    The task's own keys (``negatives``, ``batch_counts``) and ``eval_every`` are checked but not
    filled in: a recipe without them stays the dict it was, so checkpoints made before they existed
    resume.
    """
    unknown = set(recipe) - _RECIPE_KEYS
    if unknown:
        raise ValueError(f"recipe has unknown keys {sorted(unknown)}; allowed: {sorted(_RECIPE_KEYS)}")
    for key in ("epochs", "batch_size", "optimizer", "lr"):
        if key not in recipe:
            raise ValueError(f"recipe lacks {key!r}")
    spec = {"momentum": 0.9, "weight_decay": 0.0, "nesterov": False, **recipe}
    if spec["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"recipe.optimizer must be one of {OPTIMIZERS}, got {spec['optimizer']!r}")
    if int(spec["epochs"]) < 0 or int(spec["batch_size"]) <= 0:
        raise ValueError("recipe.epochs must be >= 0 and recipe.batch_size > 0")
    spec["epochs"], spec["batch_size"] = int(spec["epochs"]), int(spec["batch_size"])
    if spec.get("batch_counts", "images") not in BATCH_READINGS:
        raise ValueError(f"recipe.batch_counts must be one of {BATCH_READINGS}, got {spec['batch_counts']!r}")
    negatives = spec.get("negatives", 1)
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives <= 0:
        raise ValueError(f"recipe.negatives must be an integer > 0, got {negatives!r}")
    eval_every = spec.get("eval_every", 0)
    if isinstance(eval_every, bool) or not isinstance(eval_every, int) or eval_every < 0:
        raise ValueError(f"recipe.eval_every must be an integer >= 0, got {eval_every!r}")
    spec["schedule"] = validate_schedule(spec.get("schedule"))
    return spec


def images_per_step(recipe: Mapping[str, Any], task: str) -> int:
    """The training images of one optimizer step of ``recipe`` on ``task``.

    ``batch_counts: images`` (the default): ``batch_size`` images, each making the task's
    ``samples_per_image`` samples (a RotNet batch of B images holds 4 B rotated samples).
    ``samples``: ``batch_size`` samples, so ``batch_size / samples_per_image`` images; it must
    divide exactly (``ValueError`` otherwise).
    """
    batch_size = int(recipe["batch_size"])
    if recipe.get("batch_counts", "images") == "images":
        return batch_size
    per_image = task_declaration(task).samples_per_image
    if batch_size % per_image:
        raise ValueError(f"batch_counts: samples needs a batch_size that is a multiple of the {per_image} samples "
                         f"{task} makes of each image, got {batch_size}")
    return batch_size // per_image
