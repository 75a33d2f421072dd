"""Task registry: what a network is trained to predict from a batch of images.

- ``labels``: the dataset's class labels;
- ``rotnet``: which of the rotations 0/90/180/270 degrees was applied; every image of a
  batch appears in all four rotations, so a batch of B images holds 4*B samples;
- ``exemplar``: every image of a batch is its own class: two random augmentations of each
  (crops, flips, colour jitter, small rotations) are embedded and a triplet margin loss
  pulls the two views of an image together and pushes the nearest other image away;
- ``labels_10pct``: labels, trained on the labelled subset only (:mod:`workers.data.label_subset`);
- ``s4l``: RotNet on every image plus the labels loss on the unrotated images of the
  labelled subset; the head holds the 4 rotation logits then the class logits.

Each task is declared (torch-free) by the mask-source module that trains on it
(:mod:`workers.pruning.mask_sources`), pointing at its implementation here. A task gives its
number of outputs for a dataset, turns a batch of images and labels into
``(inputs, targets)``, scores the batch with its ``loss`` (cross-entropy unless the task
says otherwise) and counts correct predictions with ``score`` (used on the test split).
``prepare`` adapts the training split to the task (the labelled subset) from the stage's
``task_options``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from workers.data.augment import color_jitter
from workers.data.datasets import DatasetSpec, DataSplit
from workers.data.image_folder import eval_batches
from workers.data.label_subset import subset_indices
from workers.pruning.mask_sources import task_declaration

ROTATIONS = 4
EXEMPLAR_DIM = 128
TRIPLET_MARGIN = 0.5
#: label of an image outside the labelled subset (s4l); ignored by the labels loss.
UNLABELLED = -1

Batch = tuple[torch.Tensor, torch.Tensor]


def _argmax_score(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    return (outputs.argmax(dim=1) == targets).sum(), targets.shape[0]


def _keep_split(data: DataSplit, options: Mapping[str, Any]) -> DataSplit:
    return data


def _no_attach(model: torch.nn.Module, spec: DatasetSpec, seed: int) -> None:
    return None


def _nothing_after_step() -> None:
    return None


def _reads_no_recipe(recipe: Mapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Task:
    """A registered task: output count per dataset, batch builder, loss, score and data preparation."""

    name: str
    num_outputs: Callable[[DatasetSpec], int]
    make_batch: Callable[[torch.Tensor, torch.Tensor], Batch]
    #: ``loss(outputs, targets)`` -> scalar tensor; training calls it on every batch.
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    #: ``score(outputs, targets)`` -> (number correct as a tensor, number of samples).
    score: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int]] = _argmax_score
    #: ``prepare(split, task_options)`` -> the split this task trains on.
    prepare: Callable[[DataSplit, Mapping[str, Any]], DataSplit] = _keep_split
    #: whether ``make_batch`` draws random numbers (from torch's global generators); training
    #: then seeds them from the stage's seed and the step, so a resumed run repeats the draws.
    random_batches: bool = False
    #: ``attach(model, spec, seed)``: called on every model built for this task, before any
    #: weights are loaded into it; a task with training state of its own (NPID's memory bank)
    #: adds it there as buffers of ``model.head``, so state dicts, checkpoints and rewind points
    #: carry it (and a head that is redrawn drops it).
    attach: Callable[[torch.nn.Module, DatasetSpec, int], None] = _no_attach
    #: called right after every optimizer step, inside its update guard: where a task's own
    #: training state changes (NPID's bank update), so a save requested during the step's
    #: loss or backward pass sees that state and the weights at the same step.
    after_step: Callable[[], None] = _nothing_after_step
    #: ``read_recipe(recipe)``: the training loop hands the validated recipe over before the first
    #: step, so a task reads the keys only it has (NPID's ``negatives``).
    read_recipe: Callable[[Mapping[str, Any]], None] = _reads_no_recipe

    @property
    def label_head(self) -> bool:
        """Whether the head predicts the dataset's classes (declared with the task)."""
        return task_declaration(self.name).label_head


def _labels_batch(images: torch.Tensor, labels: torch.Tensor) -> Batch:
    return images, labels


def rotate_batch(images: torch.Tensor) -> Batch:
    """Every image in all four rotations (grouped by rotation) and the rotation index targets."""
    inputs = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return inputs, targets


def _rotnet_batch(images: torch.Tensor, labels: torch.Tensor) -> Batch:
    return rotate_batch(images)


# ---- the labelled subset ----------------------------------------------------------------

def _subset_of(data: DataSplit, options: Mapping[str, Any]) -> torch.Tensor:
    subset = options.get("label_subset")
    if not isinstance(subset, Mapping):
        raise ValueError(f"this task needs task_options.label_subset {{kind, fraction, seed}}, got {subset!r}")
    return subset_indices(data.train_labels, subset.get("kind", "images_per_class"),
                          float(subset.get("fraction", 0.1)), int(subset.get("seed", 0)))


def _only_subset(data: DataSplit, options: Mapping[str, Any]) -> DataSplit:
    keep = _subset_of(data, options).to(data.train_labels.device)
    return dataclasses.replace(data, train_images=data.train_images[keep], train_labels=data.train_labels[keep])


def _hide_labels_outside_subset(data: DataSplit, options: Mapping[str, Any]) -> DataSplit:
    labelled = torch.zeros_like(data.train_labels, dtype=torch.bool)
    labelled[_subset_of(data, options).to(labelled.device)] = True
    labels = torch.where(labelled, data.train_labels, torch.full_like(data.train_labels, UNLABELLED))
    return dataclasses.replace(data, train_labels=labels)


# ---- s4l: rotation + labels on the labelled subset ------------------------------------

def _s4l_batch(images: torch.Tensor, labels: torch.Tensor) -> Batch:
    """The four rotations of every image; target = rotation + 4 * (label + 1), label -1 if unknown.

    One integer per sample keeps the targets a plain 1-D tensor like every other task's.
    """
    inputs, rotations = rotate_batch(images)
    return inputs, rotations + ROTATIONS * (labels.repeat(ROTATIONS) + 1)


def _s4l_split(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return targets % ROTATIONS, torch.div(targets, ROTATIONS, rounding_mode="floor") - 1


def _s4l_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """RotNet cross-entropy on all samples + labels cross-entropy on the unrotated labelled ones."""
    rotations, labels = _s4l_split(targets)
    rotation_loss = F.cross_entropy(outputs[:, :ROTATIONS], rotations)
    supervised = (rotations == 0) & (labels != UNLABELLED)
    # sum / count (not mean over nothing) so a batch without labelled images adds 0, not NaN
    label_loss = F.cross_entropy(outputs[supervised, ROTATIONS:], labels[supervised], reduction="sum")
    return rotation_loss + label_loss / supervised.sum().clamp(min=1)


def _s4l_score(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Label accuracy on the unrotated labelled samples."""
    rotations, labels = _s4l_split(targets)
    supervised = (rotations == 0) & (labels != UNLABELLED)
    correct = (outputs[supervised, ROTATIONS:].argmax(dim=1) == labels[supervised]).sum()
    return correct, int(supervised.sum())


# ---- exemplar ---------------------------------------------------------------------------

def exemplar_augment(images: torch.Tensor, max_degrees: float = 20.0, max_shift: float = 0.125) -> torch.Tensor:
    """One random view of every image, on the images' device.

    One affine warp per image (a horizontal flip with probability 1/2, a rotation of at
    most ``max_degrees``, a shift of at most ``max_shift`` of the side, zeros outside)
    then :func:`workers.data.augment.color_jitter`. Flip, rotation and crop are one resampling
    rather than :mod:`workers.data.augment`'s crop then rotation: two interpolations blur 8x8
    digits so much that the two views of an image stop being nearest neighbours. The
    draws come from the global generator, which training seeds at every step (``random_batches``).
    """
    n, device, dtype = images.shape[0], images.device, images.dtype

    def uniform(size: int) -> torch.Tensor:
        return torch.rand(size, device=device, dtype=dtype) * 2 - 1

    angle = uniform(n) * math.radians(max_degrees)
    flip = torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0).to(dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(n) * 2 * max_shift], dim=1),
                         torch.stack([sin * flip, cos, uniform(n) * 2 * max_shift], dim=1)], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    views = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    jitter = torch.Generator(device=device).manual_seed(int(torch.randint(0, 2**62, (1,))))
    return color_jitter(views, jitter)


def _exemplar_batch(images: torch.Tensor, labels: torch.Tensor) -> Batch:
    """Two views of every image (first views, then second views); target = the image's index."""
    inputs = torch.cat([exemplar_augment(images), exemplar_augment(images)])
    targets = torch.arange(images.shape[0], device=images.device).repeat(2)
    return inputs, targets


def _exemplar_distances(outputs: torch.Tensor) -> torch.Tensor:
    embeddings = F.normalize(outputs.float(), dim=1)
    half = embeddings.shape[0] // 2
    return torch.cdist(embeddings[:half], embeddings[half:])


def _exemplar_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Triplet margin loss: anchor = first view, positive = second view of the same image,
    negative = the nearest second view of another image of the batch (batch-hard)."""
    distances = _exemplar_distances(outputs)
    positive = distances.diagonal()
    others = distances + torch.eye(distances.shape[0], device=distances.device) * 1e4
    negative = others.min(dim=1).values
    return F.relu(positive - negative + TRIPLET_MARGIN).mean()


def _exemplar_score(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Instance retrieval: how many first views have their own second view as nearest neighbour."""
    distances = _exemplar_distances(outputs)
    own = torch.arange(distances.shape[0], device=distances.device)
    return (distances.argmin(dim=1) == own).sum(), distances.shape[0]


LABELS = Task("labels", lambda spec: spec.num_classes, _labels_batch)
ROTNET = Task("rotnet", lambda spec: ROTATIONS, _rotnet_batch)
EXEMPLAR = Task("exemplar", lambda spec: EXEMPLAR_DIM, _exemplar_batch, loss=_exemplar_loss,
                score=_exemplar_score, random_batches=True)
LABELS_10PCT = Task("labels_10pct", lambda spec: spec.num_classes, _labels_batch, prepare=_only_subset)
S4L = Task("s4l", lambda spec: ROTATIONS + spec.num_classes, _s4l_batch, loss=_s4l_loss, score=_s4l_score,
           prepare=_hide_labels_outside_subset)


def get_task(name: str) -> Task:
    """The implementation of a registered task (:mod:`workers.pruning.mask_sources` registers them);
    ``ValueError`` naming the known tasks if unknown."""
    task = task_declaration(name).load()
    if not isinstance(task, Task) or task.name != name:
        raise ValueError(f"task {name!r}: its implementation is not a Task named {name!r}: {task!r}")
    return task


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, task: Task, images: torch.Tensor,
                      labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of correct predictions (``task.score``) of ``model`` in eval mode over the images."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    seen = 0
    try:
        for start, batch in zip(range(0, images.shape[0], batch_size), eval_batches(images, batch_size),
                                strict=True):
            inputs, targets = task.make_batch(batch, labels[start:start + batch_size])
            hits, n = task.score(model(inputs), targets)
            correct += hits
            seen += n
    finally:
        model.train(was_training)
    return correct.item() / max(seen, 1)
