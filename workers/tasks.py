"""Task registry: what a network is trained to predict from a batch of images.

- ``labels``: the dataset's class labels;
- ``rotnet``: which of the rotations 0/90/180/270 degrees was applied; every image of a
  batch appears in all four rotations, so a batch of B images holds 4*B samples.

A task gives its number of outputs for a dataset, turns a batch of images and labels
into ``(inputs, targets)``, and its accuracy is measured on the test split the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from workers.data import DatasetSpec

ROTATIONS = 4


@dataclass(frozen=True)
class Task:
    """A registered task: output count per dataset and a batch builder."""

    name: str
    num_outputs: Callable[[DatasetSpec], int]
    make_batch: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _labels_batch(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return images, labels


def rotate_batch(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image in all four rotations (grouped by rotation) and the rotation index targets."""
    inputs = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return inputs, targets


def _rotnet_batch(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return rotate_batch(images)


TASKS: dict[str, Task] = {
    "labels": Task("labels", lambda spec: spec.num_classes, _labels_batch),
    "rotnet": Task("rotnet", lambda spec: ROTATIONS, _rotnet_batch),
}


def get_task(name: str) -> Task:
    """Look up a task by name; ``ValueError`` naming the known tasks if unknown."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, task: Task, images: torch.Tensor,
                      labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of correct predictions of ``model`` (in eval mode) on ``task`` over the images."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    seen = 0
    try:
        for start in range(0, images.shape[0], batch_size):
            inputs, targets = task.make_batch(images[start:start + batch_size],
                                              labels[start:start + batch_size])
            correct += (model(inputs).argmax(dim=1) == targets).sum()
            seen += targets.shape[0]
    finally:
        model.train(was_training)
    return correct.item() / max(seen, 1)
