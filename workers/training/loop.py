"""Training of one model for one recipe, resumable bit for bit from epoch checkpoints.

A recipe is a dict::

    {"epochs": 20, "batch_size": 64, "optimizer": "sgd" | "adam", "lr": 0.1,
     "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
     "schedule": {"kind": "constant" | "step" | "cosine", "milestones": [10, 15],
                  "gamma": 0.1, "warmup_epochs": 0},
     "batch_counts": "images" | "samples", "negatives": 4096}   # the last two: some tasks only

(:mod:`workers.training.recipe`: a step takes :func:`~workers.training.recipe.images_per_step`
images; the task reads its own keys, NPID's ``negatives``, through ``Task.read_recipe``.)

The learning rate is set before every step from the number of steps taken
(:mod:`workers.training.schedule`), and the data order of epoch ``e`` is a permutation drawn from
``torch.Generator().manual_seed(seed * 1_000_003 + e)``; the augmentation of the image at
position ``p`` of that order is a function of ``(seed, e, p)`` too (CIFAR flips and crops
drawn from the same generator right after the permutation; ImageFolder views from a
generator per image); so a checkpoint only has to hold the model, the optimizer state and
the counters.

The loop itself is here; where the batches come from is :mod:`workers.training.batches`, the
device, bf16, DDP and compile :mod:`workers.training.device` (with its environment switches),
checkpoints and rewinding points :mod:`workers.training.checkpoints`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, Adam

from workers.data.datasets import DataSplit
from workers.data.image_folder import LazyImages
from workers.pruning.masks import MaskEnforcer, apply_mask
from workers.tasks.objectives import Task
from workers.training import distributed
from workers.training.batches import check_shards, epoch_batches
from workers.training.checkpoints import Progress, RewindCaptures, resume, save_checkpoint
from workers.training.device import forward_module, prepare_device
from workers.training.preemption import saving_with, update_guard
from workers.training.recipe import images_per_step, validate_recipe
from workers.training.schedule import iterations_per_epoch, learning_rate_at
from workers.training.seeds import derive_seed

log = logging.getLogger(__name__)


def make_optimizer(model: nn.Module, recipe: Mapping[str, Any]) -> SGD | Adam:
    """The recipe's optimizer over all parameters of ``model`` (weight decay on all of them)."""
    if recipe["optimizer"] == "sgd":
        return SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                   weight_decay=recipe["weight_decay"], nesterov=recipe["nesterov"], foreach=True)
    return Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"], foreach=True)


@dataclass(frozen=True)
class TrainResult:
    """What a training did: epochs and optimizer steps completed, last epoch's loss/accuracy."""

    epochs: int
    iterations: int
    last_loss: float | None
    last_accuracy: float | None
    #: seconds spent training, summed over every run that led here (a resumed run adds the
    #: time its checkpoint had already cost, not the time lost after that checkpoint)
    seconds: float = 0.0


def total_iterations(recipe: Mapping[str, Any], train_size: int, task: str = "labels") -> int:
    """Optimizer steps of a whole training with ``recipe`` on ``train_size`` images of ``task``."""
    spec = validate_recipe(recipe)
    return spec["epochs"] * iterations_per_epoch(train_size, images_per_step(spec, task))


def train(model: nn.Module, task: Task, data: DataSplit, recipe: Mapping[str, Any], seed: int, *,
          mask: Mapping[str, torch.Tensor] | None = None,
          checkpoint_path: Path | None = None,
          capture_iterations: Iterable[int] = (),
          capture_dir: Path | None = None,
          stop_at_iteration: int | None = None,
          on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``task`` with ``recipe``; data order drawn from ``seed``.

    - ``mask``: pruned weights are zeroed first and kept exactly zero throughout;
    - ``checkpoint_path``: written atomically after every epoch, and in the middle of one
      when :func:`workers.training.preemption.save_progress` asks (a scheduler's warning signal);
      resumed from when it exists at the start, mid-epoch included (a run killed at any
      point and rerun ends bit-identical on CPU);
    - ``capture_iterations``: for each ``k``, the state dict after exactly ``k`` steps
      (``k = 0``: before training) is saved as ``capture_dir / rewind_<k>.pt`` as soon as
      it is reached, unless that file already exists;
    - ``stop_at_iteration``: stop after exactly that many steps (same learning rates as
      the full training);
    - ``on_epoch``: called after every whole epoch, before its checkpoint, with ``epoch``,
      ``iteration``, ``train_loss``, ``train_accuracy``, ``lr`` and ``seconds`` (a resumed run
      calls it again for an epoch whose checkpoint a kill prevented).

    Model and data go to CUDA when it is visible, else stay on the CPU.
    """
    spec = validate_recipe(recipe)
    device, data, bf16 = prepare_device(model, data)
    loop = _Loop(model, task, data, spec, seed, device, bf16, mask, stop_at_iteration,
                 RewindCaptures(capture_iterations, capture_dir, model), on_epoch)
    clock = time.perf_counter()
    progress = resume(checkpoint_path, loop.fingerprint, model, loop.optimizer, loop.captures, device)
    progress.clock = clock

    def save(progress: Progress) -> None:
        if checkpoint_path is not None:
            save_checkpoint(Path(checkpoint_path), loop.fingerprint, model, loop.optimizer, progress.epochs_done,
                             progress.iteration, progress.seconds())

    return loop.run(progress, save)


class _Loop:
    """The training loop of one run; checkpointing, captures, DDP and compile come in as hooks."""

    def __init__(self, model: nn.Module, task: Task, data: DataSplit, spec: dict, seed: int,
                 device: torch.device, bf16: bool, mask: Mapping[str, torch.Tensor] | None,
                 stop_at_iteration: int | None, captures: RewindCaptures,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None):
        self.on_epoch = on_epoch
        self.model, self.task, self.data, self.spec, self.seed = model, task, data, spec, int(seed)
        self.device, self.bf16, self.captures = device, bf16, captures
        self.n_train, self.epochs = data.train_images.shape[0], spec["epochs"]
        self.batch_size = images_per_step(spec, task.name)  # images; batch_counts: samples divides
        task.read_recipe(spec)
        self.steps_per_epoch = iterations_per_epoch(self.n_train, self.batch_size)
        self.ranks = distributed.current()
        if self.ranks is not None:
            check_shards(self.n_train, self.batch_size, self.ranks.world_size)
        full_length = self.epochs * self.steps_per_epoch
        self.limit = full_length if stop_at_iteration is None else int(stop_at_iteration)
        if not 0 <= self.limit <= full_length:
            raise ValueError(f"stop_at_iteration {stop_at_iteration} outside [0, {full_length}]")
        captures.check_within(self.limit, self.epochs, self.steps_per_epoch)
        self.optimizer = make_optimizer(model, spec)
        self.enforcer = None
        if mask is not None:
            apply_mask(model, mask)
            self.enforcer = MaskEnforcer(model, mask)
        self.mask = mask
        self.fingerprint: dict[str, Any] = {"recipe": spec, "seed": self.seed, "task": task.name,
                                            "train_size": self.n_train, "masked": mask is not None}
        if data.augment is not None or isinstance(data.train_images, LazyImages):
            self.fingerprint["augment"] = data.augment or "random_resized_crop_flip"

    def run(self, progress: Progress, save) -> TrainResult:
        """Train from ``progress`` to the end (or ``stop_at_iteration``), calling ``save`` after each epoch."""
        forward = forward_module(self.model, self.device, self.ranks, self.mask)
        self.model.train()
        if progress.iteration == 0:
            self.captures.at(0)
        last: tuple[float | None, float | None] = (None, None)

        def save_mid_epoch() -> None:
            save(progress)
            log.info("saved progress at iteration %d (inside epoch %d) on request", progress.iteration,
                     progress.epochs_done + 1)

        with saving_with(save_mid_epoch):
            for epoch in range(progress.epochs_done, self.epochs):
                if progress.iteration >= self.limit:
                    break
                loss, accuracy, lr = self._epoch(forward, epoch, progress)
                if loss is not None:
                    last = (loss, accuracy)
                if progress.iteration < (epoch + 1) * self.steps_per_epoch:  # stopped inside this epoch
                    log.info("stopped at iteration %d inside epoch %d", progress.iteration, epoch + 1)
                    break
                progress.epochs_done = epoch + 1
                if loss is not None:  # none when a save on request landed right after the epoch's last step
                    log.info("epoch %d/%d: loss %.4f, %s accuracy %.4f (train, iteration %d, lr %.3g)",
                             progress.epochs_done, self.epochs, loss, self.task.name, accuracy, progress.iteration,
                             lr)
                    if self.on_epoch is not None:
                        self.on_epoch({"epoch": progress.epochs_done, "iteration": progress.iteration,
                                       "train_loss": loss, "train_accuracy": accuracy, "lr": lr,
                                       "seconds": round(progress.seconds(), 3)})
                save(progress)
        return TrainResult(epochs=progress.epochs_done, iterations=progress.iteration, last_loss=last[0],
                           last_accuracy=last[1], seconds=progress.seconds())

    def _epoch(self, forward: nn.Module, epoch: int, progress: Progress
               ) -> tuple[float | None, float | None, float]:
        """Train the rest of ``epoch``; returns its mean loss and accuracy (None if no step ran) and the last lr."""
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        samples, lr = 0, float("nan")
        already = progress.iteration - epoch * self.steps_per_epoch  # steps of this epoch done before a resume
        for batch_images, batch_labels in epoch_batches(self.data, self.seed, epoch, self.batch_size, already,
                                                        self.device):
            if progress.iteration >= self.limit:
                break
            lr = learning_rate_at(self.spec["lr"], self.spec["schedule"], progress.iteration, self.steps_per_epoch,
                                  self.epochs)
            loss, outputs, targets = self._step(forward, batch_images, batch_labels, epoch, lr, progress)
            with torch.no_grad():
                loss_sum += loss.detach() * targets.shape[0]
                if targets.dim() == 1:
                    correct += (outputs.argmax(dim=1) == targets).sum()
                else:  # multi-label targets (N, C): the task counts its own correct decisions
                    correct += self.task.score(outputs, targets)[0]
            samples += targets.shape[0]
            self.captures.at(progress.iteration)
        if not samples:
            return None, None, lr
        return loss_sum.item() / samples, correct.item() / samples, lr

    def _step(self, forward: nn.Module, batch_images: torch.Tensor, batch_labels: torch.Tensor, epoch: int,
              lr: float, progress: Progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One optimizer step; returns the loss, the outputs and the targets.

        The whole step runs under :func:`update_guard`: a save requested during it waits for its
        end, since the forward pass already moves BatchNorm's running statistics (and a task's
        own state) while the weights and the step counter only move at ``optimizer.step()``.
        """
        with update_guard():
            if self.task.random_batches:  # the draws depend on the step only: a resume repeats them
                torch.manual_seed(derive_seed(self.seed, "batch", progress.iteration))
            inputs, targets = self.task.make_batch(batch_images, batch_labels)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                outputs = forward(inputs)
                loss = self.task.loss(outputs, targets)
            self.optimizer.zero_grad()
            if self.ranks is not None:  # DDP averages over ranks: weight each by its share of the batch
                in_batch = min(self.batch_size,
                               self.n_train - (progress.iteration - epoch * self.steps_per_epoch) * self.batch_size)
                (loss * (batch_images.shape[0] * self.ranks.world_size / in_batch)).backward()
            else:
                loss.backward()
            if self.enforcer is not None:
                self.enforcer.zero_pruned_grads()
            self.optimizer.step()
            self.task.after_step()
            if self.enforcer is not None:
                self.enforcer.reapply()
            progress.iteration += 1
        return loss, outputs, targets
