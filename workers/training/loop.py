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

Where the batches come from (:func:`epoch_batches`): tensors held on the training device
(digits, CIFAR-10) are indexed and augmented there, with no per-step host work; image
folders (:class:`workers.data.image_folder.LazyImages`) go through a DataLoader with worker
processes and pinned memory.

On a GPU the forward pass and loss run under bf16 autocast, the model is channels-last
and cuDNN picks its fastest kernels (so GPU runs are not bit-reproducible; CPU runs are).
Environment switches: ``PRUNESWEEP_COMPILE=1`` trains a ``torch.compile``-d model;
``PRUNESWEEP_BF16=0`` keeps fp32 on the GPU (``=1`` autocasts on the CPU too);
``PRUNESWEEP_DETERMINISTIC=1`` asks cuDNN for deterministic kernels;
``PRUNESWEEP_LOADER_WORKERS=N`` sets the DataLoader's processes.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, Adam

from workers.data.augment import draw_flip_crop, flip_crop
from workers.data.datasets import DataSplit
from workers.data.image_folder import LazyImages, train_loader
from workers.pruning.masks import MaskEnforcer, apply_mask
from workers.stages.artifacts import atomic_save_with
from workers.stages.paths import rewind_file
from workers.stages.workspace_files import reading
from workers.tasks.objectives import Task
from workers.training import distributed
from workers.training.preemption import saving_with, update_guard
from workers.training.recipe import images_per_step, validate_recipe
from workers.training.schedule import iterations_per_epoch, learning_rate_at
from workers.training.seeds import derive_seed

log = logging.getLogger(__name__)

DATA_ORDER_STRIDE = 1_000_003


def pick_device() -> torch.device:
    """The first CUDA device when one is visible (a distributed rank's own GPU), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    ranks = distributed.current()
    return torch.device("cuda", ranks.local_rank % torch.cuda.device_count()) if ranks else torch.device("cuda")


def make_optimizer(model: nn.Module, recipe: Mapping[str, Any]) -> SGD | Adam:
    """The recipe's optimizer over all parameters of ``model`` (weight decay on all of them)."""
    if recipe["optimizer"] == "sgd":
        return SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                   weight_decay=recipe["weight_decay"], nesterov=recipe["nesterov"], foreach=True)
    return Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"], foreach=True)


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in ("0", "false", "no", "")


def epoch_batches(data: DataSplit, seed: int, epoch: int, batch_size: int, first_step: int,
                  device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The training batches ``(images, labels)`` of ``epoch`` from step ``first_step`` on.

    The order is the permutation of ``torch.Generator().manual_seed(seed * 1_000_003 +
    epoch)``; the same batches come out whatever ``first_step`` is (a mid-epoch resume).
    In a distributed stage each rank gets its shard of every batch
    (:func:`workers.training.distributed.shard`): the shards of all ranks make the whole batch.
    """
    images, labels = data.train_images, data.train_labels
    n_train = images.shape[0]
    generator = torch.Generator().manual_seed(int(seed) * DATA_ORDER_STRIDE + epoch)
    order = torch.randperm(n_train, generator=generator)
    if isinstance(images, LazyImages):
        yield from train_loader(images, labels, order, batch_size, first_step, seed, epoch, device,
                                shard=distributed.shard)
        return
    params = None
    if data.augment == "flip_crop":  # drawn after the order: the order is the same as without
        params = draw_flip_crop(n_train, generator).to(device)
    elif data.augment is not None:
        raise ValueError(f"unknown augmentation {data.augment!r}")
    order = order.to(device)
    for start in range(first_step * batch_size, n_train, batch_size):
        batch = distributed.shard(order[start:start + batch_size])
        inputs = images[batch]
        if params is not None:
            # pads with 0, the mean colour of the normalised images
            inputs = flip_crop(inputs, distributed.shard(params[start:start + batch_size]))
        yield inputs, labels[batch]


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict copied to the CPU, every tensor contiguous (NCHW)."""
    return {name: tensor.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
            for name, tensor in model.state_dict().items()}


def save_state_dict(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Atomically ``torch.save`` a state dict."""
    atomic_save_with(Path(path), lambda handle: torch.save(dict(state), handle))


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


class RewindCaptures:
    """The rewinding points of a training: the weights after exactly ``k`` steps, saved once as ``rewind_<k>.pt``."""

    def __init__(self, iterations: Iterable[int], folder: Path | None, model: nn.Module):
        self.iterations = sorted({int(k) for k in iterations})
        if self.iterations and folder is None:
            raise ValueError("capture_iterations needs a capture_dir")
        self.folder = Path(folder) if folder is not None else None
        self.model = model

    def check_within(self, limit: int, epochs: int, steps_per_epoch: int) -> None:
        """Refuse points the training will not reach."""
        beyond = [k for k in self.iterations if not 0 <= k <= limit]
        if beyond:
            raise ValueError(f"capture_iterations {beyond} outside [0, {limit}] "
                             f"({epochs} epochs x {steps_per_epoch} steps)")

    def missing_before(self, iteration: int) -> list[int]:
        """Points before ``iteration`` whose file is missing (a checkpoint past them cannot be used)."""
        return [k for k in self.iterations if k < iteration and not self._path(k).exists()]

    def at(self, step: int) -> None:
        """Save the weights if ``step`` is a rewinding point not saved yet."""
        if step in self.iterations and not self._path(step).exists():
            save_state_dict(self._path(step), cpu_state_dict(self.model))
            log.info("captured weights after %d iterations in %s", step, rewind_file(step))

    def _path(self, step: int) -> Path:
        assert self.folder is not None
        return self.folder / rewind_file(step)


@dataclass
class _Progress:
    """Where a training stands: epochs completed, optimizer steps taken, seconds spent (over every attempt)."""

    epochs_done: int = 0
    iteration: int = 0
    seconds_before: float = 0.0
    clock: float = 0.0

    def seconds(self) -> float:
        return self.seconds_before + time.perf_counter() - self.clock


def _prepare_device(model: nn.Module, data: DataSplit) -> tuple[torch.device, DataSplit, bool]:
    """Move model and data to the training device; returns the device, the data there and whether bf16 is on."""
    device = pick_device()
    if device.type == "cuda":
        deterministic = _flag("PRUNESWEEP_DETERMINISTIC", False)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
    model.to(device=device, memory_format=torch.channels_last)  # ~20% faster convs on CPU
    # bf16 autocast: on by default on a GPU; PRUNESWEEP_BF16=1 turns it on on the CPU too (CI runs the GPU's branch)
    return device, data.to(device), _flag("PRUNESWEEP_BF16", device.type == "cuda")


def _resume(checkpoint_path: Path | None, fingerprint: dict, model: nn.Module, optimizer: SGD | Adam,
            captures: RewindCaptures, device: torch.device) -> _Progress:
    """The progress of a usable checkpoint (model and optimizer loaded from it), else a fresh start."""
    progress = _Progress()
    if checkpoint_path is None or not Path(checkpoint_path).exists():
        return progress
    state = _read_checkpoint(Path(checkpoint_path), fingerprint, device)
    if state is None:
        return progress
    lost = captures.missing_before(int(state["iteration"]))
    if lost:
        log.warning("ignoring %s: the captures %s it has passed are missing", Path(checkpoint_path).name, lost)
        return progress
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    progress.epochs_done, progress.iteration = int(state["epoch"]), int(state["iteration"])
    progress.seconds_before = float(state.get("seconds", 0.0))
    log.info("resumed from %s at epoch %d (iteration %d)", Path(checkpoint_path).name, progress.epochs_done,
             progress.iteration)
    return progress


def _forward_module(model: nn.Module, device: torch.device, ranks: distributed.Ranks | None,
                    mask: Mapping[str, torch.Tensor] | None) -> nn.Module:
    """What the forward pass calls: the model, wrapped in DDP for a distributed stage, compiled on request."""
    wrapped = model
    if ranks is not None:
        if mask is not None:
            distributed.check_identical(mask)
        from torch.nn.parallel import DistributedDataParallel  # rank 0's weights reach every rank here

        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return torch.compile(wrapped) if _flag("PRUNESWEEP_COMPILE", False) else wrapped


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
    device, data, bf16 = _prepare_device(model, data)
    loop = _Loop(model, task, data, spec, seed, device, bf16, mask, stop_at_iteration,
                 RewindCaptures(capture_iterations, capture_dir, model), on_epoch)
    clock = time.perf_counter()
    progress = _resume(checkpoint_path, loop.fingerprint, model, loop.optimizer, loop.captures, device)
    progress.clock = clock

    def save(progress: _Progress) -> None:
        if checkpoint_path is not None:
            _save_checkpoint(Path(checkpoint_path), loop.fingerprint, model, loop.optimizer, progress.epochs_done,
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
            _check_shards(self.n_train, self.batch_size, self.ranks.world_size)
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

    def run(self, progress: _Progress, save) -> TrainResult:
        """Train from ``progress`` to the end (or ``stop_at_iteration``), calling ``save`` after each epoch."""
        forward = _forward_module(self.model, self.device, self.ranks, self.mask)
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

    def _epoch(self, forward: nn.Module, epoch: int, progress: _Progress
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
              lr: float, progress: _Progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def _check_shards(n_train: int, batch_size: int, world_size: int) -> None:
    """Refuse a batch that some rank would get no image of (it could not take part in a step)."""
    last = n_train % batch_size or batch_size
    if min(batch_size, last) < world_size:
        raise ValueError(f"recipe.batch_size {batch_size} on {n_train} training images leaves a batch of "
                         f"{min(batch_size, last)} images, fewer than the {world_size} ranks: every rank needs "
                         "at least one image of every batch; choose another batch_size or fewer ranks")


def _save_checkpoint(path: Path, fingerprint: dict, model: nn.Module,
                     optimizer: SGD | Adam, epochs_done: int, iteration: int, seconds: float) -> None:
    state = {"fingerprint": fingerprint, "model": model.state_dict(),
             "optimizer": optimizer.state_dict(),
             "schedule": {"iteration": iteration},  # the lr is a function of the step count
             "epoch": epochs_done, "iteration": iteration, "seconds": seconds}
    atomic_save_with(path, lambda handle: torch.save(state, handle))


def _read_checkpoint(path: Path, fingerprint: dict, device: torch.device) -> dict | None:
    """A checkpoint written for this exact configuration, or ``None`` if it is unusable."""
    try:
        with reading(path) as handle:  # never through a link, never waiting on a FIFO
            state = torch.load(handle, map_location=device, weights_only=True)
    except Exception as error:  # a damaged checkpoint only costs a restart from scratch
        log.warning("ignoring unreadable checkpoint %s: %s", path.name, error)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s written for another configuration", path.name)
        return None
    return state
