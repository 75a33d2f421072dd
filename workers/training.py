"""Training of one model for one recipe, resumable bit for bit from epoch checkpoints.

A recipe is a dict::

    {"epochs": 20, "batch_size": 64, "optimizer": "sgd" | "adam", "lr": 0.1,
     "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False,
     "schedule": {"kind": "constant" | "step" | "cosine", "milestones": [10, 15],
                  "gamma": 0.1, "warmup_epochs": 0}}

The learning rate is set before every step from the number of steps taken
(:mod:`workers.schedule`), and the data order of epoch ``e`` is a permutation drawn from
``torch.Generator().manual_seed(seed * 1_000_003 + e)``; the augmentation of the image at
position ``p`` of that order is a function of ``(seed, e, p)`` too (CIFAR flips and crops
drawn from the same generator right after the permutation; ImageFolder views from a
generator per image); so a checkpoint only has to hold the model, the optimizer state and
the counters.

Where the batches come from (:func:`epoch_batches`): tensors held on the training device
(digits, CIFAR-10) are indexed and augmented there, with no per-step host work; image
folders (:class:`workers.image_folder.LazyImages`) go through a DataLoader with worker
processes and pinned memory.

On a GPU the forward pass and loss run under bf16 autocast, the model is channels-last
and cuDNN picks its fastest kernels (so GPU runs are not bit-reproducible; CPU runs are).
Environment switches: ``PRUNESWEEP_COMPILE=1`` trains a ``torch.compile``-d model;
``PRUNESWEEP_BF16=0`` keeps fp32 on the GPU; ``PRUNESWEEP_DETERMINISTIC=1`` asks cuDNN for
deterministic kernels; ``PRUNESWEEP_LOADER_WORKERS=N`` sets the DataLoader's processes.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import SGD, Adam

from workers import distributed
from workers.artifacts import atomic_save_with
from workers.augment import draw_flip_crop, flip_crop
from workers.data import DataSplit
from workers.image_folder import LazyImages, train_loader
from workers.preemption import saving_with, update_guard
from workers.pruning import MaskEnforcer, apply_mask
from workers.schedule import iterations_per_epoch, learning_rate_at, validate_schedule
from workers.seeds import derive_seed
from workers.tasks import Task

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam")
_RECIPE_KEYS = {"epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                "nesterov", "schedule"}
DATA_ORDER_STRIDE = 1_000_003


def pick_device() -> torch.device:
    """The first CUDA device when one is visible (a distributed rank's own GPU), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    ranks = distributed.current()
    return torch.device("cuda", ranks.local_rank % torch.cuda.device_count()) if ranks else torch.device("cuda")


def validate_recipe(recipe: Mapping[str, Any]) -> dict:
    """Return the recipe with defaults filled in; ``ValueError`` naming the bad key otherwise."""
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
    spec["schedule"] = validate_schedule(spec.get("schedule"))
    return spec


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
    (:func:`workers.distributed.shard`): the shards of all ranks make the whole batch.
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


def rewind_file(iteration: int) -> str:
    """File name of the weights captured after ``iteration`` optimizer steps."""
    return f"rewind_{int(iteration)}.pt"


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


def total_iterations(recipe: Mapping[str, Any], train_size: int) -> int:
    """Optimizer steps of a whole training with ``recipe`` on ``train_size`` images."""
    spec = validate_recipe(recipe)
    return spec["epochs"] * iterations_per_epoch(train_size, spec["batch_size"])


def train(model: nn.Module, task: Task, data: DataSplit, recipe: Mapping[str, Any], seed: int, *,
          mask: Mapping[str, torch.Tensor] | None = None,
          checkpoint_path: Path | None = None,
          capture_iterations: Iterable[int] = (),
          capture_dir: Path | None = None,
          stop_at_iteration: int | None = None) -> TrainResult:
    """Train ``model`` in place on ``task`` with ``recipe``; data order drawn from ``seed``.

    - ``mask``: pruned weights are zeroed first and kept exactly zero throughout;
    - ``checkpoint_path``: written atomically after every epoch, and in the middle of one
      when :func:`workers.preemption.save_progress` asks (a scheduler's warning signal);
      resumed from when it exists at the start, mid-epoch included (a run killed at any
      point and rerun ends bit-identical on CPU);
    - ``capture_iterations``: for each ``k``, the state dict after exactly ``k`` steps
      (``k = 0``: before training) is saved as ``capture_dir / rewind_<k>.pt`` as soon as
      it is reached, unless that file already exists;
    - ``stop_at_iteration``: stop after exactly that many steps (same learning rates as
      the full training).

    Model and data go to CUDA when it is visible, else stay on the CPU.
    """
    spec = validate_recipe(recipe)
    device = pick_device()
    if device.type == "cuda":
        deterministic = _flag("PRUNESWEEP_DETERMINISTIC", False)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
    model.to(device=device, memory_format=torch.channels_last)  # ~20% faster convs on CPU
    data = data.to(device)
    n_train, batch_size, epochs = data.train_images.shape[0], spec["batch_size"], spec["epochs"]
    bf16 = device.type == "cuda" and _flag("PRUNESWEEP_BF16", True)
    steps_per_epoch = iterations_per_epoch(n_train, batch_size)
    ranks = distributed.current()
    if ranks is not None:
        _check_shards(n_train, batch_size, ranks.world_size)
    full_length = epochs * steps_per_epoch
    limit = full_length if stop_at_iteration is None else int(stop_at_iteration)
    if not 0 <= limit <= full_length:
        raise ValueError(f"stop_at_iteration {stop_at_iteration} outside [0, {full_length}]")
    captures = sorted({int(k) for k in capture_iterations})
    if captures and capture_dir is None:
        raise ValueError("capture_iterations needs a capture_dir")
    beyond = [k for k in captures if not 0 <= k <= limit]
    if beyond:
        raise ValueError(f"capture_iterations {beyond} outside [0, {limit}] "
                         f"({epochs} epochs x {steps_per_epoch} steps)")

    optimizer = make_optimizer(model, spec)
    enforcer = None
    if mask is not None:
        apply_mask(model, mask)
        enforcer = MaskEnforcer(model, mask)
    fingerprint = {"recipe": spec, "seed": int(seed), "task": task.name, "train_size": n_train,
                   "masked": mask is not None}
    if data.augment is not None or isinstance(data.train_images, LazyImages):
        fingerprint["augment"] = data.augment or "random_resized_crop_flip"

    start_epoch, iteration = 0, 0
    clock, seconds_before = time.perf_counter(), 0.0
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        state = _read_checkpoint(Path(checkpoint_path), fingerprint, device)
        lost = [k for k in captures if state is not None and k < state["iteration"]
                and not (Path(capture_dir) / rewind_file(k)).exists()]
        if lost:
            log.warning("ignoring %s: the captures %s it has passed are missing",
                        Path(checkpoint_path).name, lost)
        elif state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, iteration = int(state["epoch"]), int(state["iteration"])
            seconds_before = float(state.get("seconds", 0.0))
            log.info("resumed from %s at epoch %d (iteration %d)", Path(checkpoint_path).name,
                     start_epoch, iteration)

    if ranks is not None:
        if mask is not None:
            distributed.check_identical(mask)
        from torch.nn.parallel import DistributedDataParallel  # rank 0's weights reach every rank here

        wrapped = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    else:
        wrapped = model
    forward = torch.compile(wrapped) if _flag("PRUNESWEEP_COMPILE", False) else wrapped

    def seconds() -> float:
        return seconds_before + time.perf_counter() - clock

    def capture(step: int) -> None:
        if step in captures:
            path = Path(capture_dir) / rewind_file(step)
            if not path.exists():
                save_state_dict(path, cpu_state_dict(model))
                log.info("captured weights after %d iterations in %s", step, path.name)

    model.train()
    if iteration == 0:
        capture(0)
    last_loss = last_accuracy = None
    epochs_done = start_epoch

    def save_mid_epoch() -> None:
        if checkpoint_path is not None:
            _save_checkpoint(Path(checkpoint_path), fingerprint, model, optimizer, epochs_done, iteration,
                             seconds())
            log.info("saved progress at iteration %d (inside epoch %d) on request", iteration, epochs_done + 1)

    with saving_with(save_mid_epoch):
        for epoch in range(start_epoch, epochs):
            if iteration >= limit:
                break
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            samples = 0
            already = iteration - epoch * steps_per_epoch  # steps of this epoch done before a resume
            for batch_images, batch_labels in epoch_batches(data, seed, epoch, batch_size, already, device):
                if iteration >= limit:
                    break
                if task.random_batches:  # the draws depend on the step only: a resume repeats them
                    torch.manual_seed(derive_seed(seed, "batch", iteration))
                inputs, targets = task.make_batch(batch_images, batch_labels)
                lr = learning_rate_at(spec["lr"], spec["schedule"], iteration, steps_per_epoch, epochs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    outputs = forward(inputs)
                    loss = task.loss(outputs, targets)
                optimizer.zero_grad()
                if ranks is not None:  # DDP averages over ranks: weight each by its share of the batch
                    in_batch = min(batch_size, n_train - (iteration - epoch * steps_per_epoch) * batch_size)
                    (loss * (batch_images.shape[0] * ranks.world_size / in_batch)).backward()
                else:
                    loss.backward()
                if enforcer is not None:
                    enforcer.zero_pruned_grads()
                with update_guard():  # a save requested now waits for weights and counter to agree
                    optimizer.step()
                    if enforcer is not None:
                        enforcer.reapply()
                    iteration += 1
                with torch.no_grad():
                    loss_sum += loss.detach() * targets.shape[0]
                    correct += (outputs.argmax(dim=1) == targets).sum()
                samples += targets.shape[0]
                capture(iteration)
            if samples:
                last_loss, last_accuracy = loss_sum.item() / samples, correct.item() / samples
            if iteration < (epoch + 1) * steps_per_epoch:  # stopped inside this epoch
                log.info("stopped at iteration %d inside epoch %d", iteration, epoch + 1)
                break
            epochs_done = epoch + 1
            if samples:  # none when a save on request landed right after the epoch's last step
                log.info("epoch %d/%d: loss %.4f, %s accuracy %.4f (train, iteration %d, lr %.3g)",
                         epochs_done, epochs, last_loss, task.name, last_accuracy, iteration, lr)
            if checkpoint_path is not None:
                _save_checkpoint(Path(checkpoint_path), fingerprint, model, optimizer,
                                 epochs_done, iteration, seconds())
    return TrainResult(epochs=epochs_done, iterations=iteration, last_loss=last_loss,
                       last_accuracy=last_accuracy, seconds=seconds())


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
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # a damaged checkpoint only costs a restart from scratch
        log.warning("ignoring unreadable checkpoint %s: %s", path.name, error)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s written for another configuration", path.name)
        return None
    return state
