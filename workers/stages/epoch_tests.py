"""The test accuracy measured during a training, every ``eval_every`` epochs of its recipe.

A stage measures its test accuracy after its last epoch (:meth:`EpochRecorder.measured`); a recipe
with ``eval_every: N`` also measures it after every N-th epoch, into that epoch's line of
``epochs.jsonl`` (and so the trackers and the report's per-epoch curves), as ``test_top1`` (a head
that predicts labels) or ``test_accuracy`` (another task's own accuracy). The measurement changes
nothing the training does: eval mode (no BatchNorm statistics move), no gradient, and the random
number generators forked around it, so a stage trains to the same weights with or without it.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from workers.tasks.objectives import Task, evaluate_accuracy


def measuring_every(on_epoch: Callable[[dict[str, Any]], None], model: nn.Module, task: Task, images: Any,
                    labels: torch.Tensor, recipe: Mapping[str, Any]) -> Callable[[dict[str, Any]], None]:
    """``on_epoch`` of :func:`workers.training.loop.train`, adding the test accuracy of ``model`` on
    ``images`` and ``labels`` (the test split, on the training device) to the epochs that
    ``recipe['eval_every']`` names; ``on_epoch`` itself when it is 0 or absent."""
    every = int(recipe.get("eval_every", 0) or 0)
    if every <= 0:
        return on_epoch
    name = "test_top1" if task.label_head else "test_accuracy"

    def record(entry: dict[str, Any]) -> None:
        if entry["epoch"] % every == 0:
            with torch.no_grad(), torch.random.fork_rng():
                entry = {**entry, name: evaluate_accuracy(model, task, images, labels)}
        on_epoch(entry)

    return record
