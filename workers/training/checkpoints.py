"""What a training saves and resumes from: state dicts, its rewinding points (the weights after
exactly ``k`` steps) and its epoch checkpoint (model, optimizer and counters: the data order and
the learning rate are functions of the seed and the step count, so nothing else is needed).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.optim import SGD, Adam

from workers.stages.artifacts import atomic_save_with
from workers.stages.paths import rewind_file
from workers.stages.workspace_files import reading

log = logging.getLogger(__name__)


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict copied to the CPU, every tensor contiguous (NCHW)."""
    return {name: tensor.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
            for name, tensor in model.state_dict().items()}


def save_state_dict(path: Path, state: Mapping[str, torch.Tensor]) -> None:
    """Atomically ``torch.save`` a state dict."""
    atomic_save_with(Path(path), lambda handle: torch.save(dict(state), handle))


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
class Progress:
    """Where a training stands: epochs completed, optimizer steps taken, seconds spent (over every attempt)."""

    epochs_done: int = 0
    iteration: int = 0
    seconds_before: float = 0.0
    clock: float = 0.0

    def seconds(self) -> float:
        """Seconds spent training so far, this attempt's included."""
        return self.seconds_before + time.perf_counter() - self.clock


def resume(checkpoint_path: Path | None, fingerprint: dict, model: nn.Module, optimizer: SGD | Adam,
            captures: RewindCaptures, device: torch.device) -> Progress:
    """The progress of a usable checkpoint (model and optimizer loaded from it), else a fresh start."""
    progress = Progress()
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


def save_checkpoint(path: Path, fingerprint: dict, model: nn.Module,
                     optimizer: SGD | Adam, epochs_done: int, iteration: int, seconds: float) -> None:
    """Atomically write the epoch checkpoint: what :func:`resume` needs, under the run's ``fingerprint``."""
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
