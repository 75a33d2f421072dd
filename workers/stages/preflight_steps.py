"""The training checks of ``preflight``, each in a fresh process of one rank: ``python -m
workers.stages.preflight_steps ORDER.json``.

``ORDER.json`` names a target (:class:`~workers.stages.contract.PreflightTarget` as a dict),
a folder and a ``phase``:

- ``train``: build the target's network and task, keep the sweep's smallest fraction of its
  prunable weights (a random mask), and train ``steps + 1`` optimizer steps through the
  worker's own :func:`~workers.training.loop.train` (bf16 autocast and channels-last where it
  uses them) on the first ``steps`` batches of the training split, so that the loop saves its
  epoch checkpoint after step ``steps``. Reports the loss, whether every pruned weight is still
  exactly zero, and the weights after the last step (``after.pt``). A batch that does not fit in
  the device's memory is halved until one fits: the report names the largest that did.
- ``resume``: a new process builds the same network, resumes the checkpoint through the
  same ``train`` and takes the one step left; it compares its weights with ``after.pt``.

Writes ``<phase>.json`` in the folder. Knows nothing of backends or the orchestrator.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from workers.data.datasets import dataset_spec, load_split
from workers.models import build_model
from workers.pruning.masks import count, prunable_names, random_mask
from workers.stages.artifacts import atomic_write_json
from workers.stages.paths import CHECKPOINT_FILE, PREFLIGHT_WEIGHTS_FILE, preflight_phase_files
from workers.stages.workspace_files import read_json
from workers.tasks.objectives import get_task
from workers.training.device import pick_device
from workers.training.loop import train

#: the largest difference a resumed step may show on a CUDA device, relative to the weights'
#: largest magnitude (cuDNN picks convolution algorithms per process: not bit-identical there).
CUDA_RESUME_TOLERANCE = 1e-3


def out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says an allocation failed (a CUDA device's memory, or the process's limit)."""
    text = str(error)
    return isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError" or (
        isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text))


def _first_images(data, count_: int):
    """The split with exactly ``count_`` training images: its first ones, repeated from the start when it
    holds fewer (a lazy folder stays lazy)."""
    positions = torch.arange(count_) % data.train_images.shape[0]
    return replace(data, train_images=data.train_images[positions],
                   train_labels=data.train_labels[positions.to(data.train_labels.device)])


def _network(target: dict[str, Any]):
    spec = dataset_spec(target["dataset"])
    task = get_task(target["task"])
    model = build_model(target["arch"], task.num_outputs(spec), spec.in_channels, int(target["seed"]))
    task.attach(model, spec, int(target["seed"]))
    return spec, task, model


def _mask(model: torch.nn.Module, fraction: float, seed: int) -> dict[str, torch.Tensor]:
    total = sum(model.get_parameter(name).numel() for name in prunable_names(model))
    return random_mask(model, max(1, round(fraction * total)), seed)


def _recipe(target: dict[str, Any], batch: int) -> dict[str, Any]:
    # two epochs of `steps` batches each: the loop checkpoints at the end of the first
    return {**target["recipe"], "epochs": 2, "batch_size": batch}


def _steps(order: dict[str, Any], folder: Path, resume: bool, batch: int) -> dict[str, Any]:
    target, steps = order["target"], int(order["steps"])
    spec, task, model = _network(target)
    mask = _mask(model, float(target["fraction"]), int(target["seed"]))
    data = task.prepare(load_split(target["dataset"], pick_device()), target.get("task_options") or {})
    data = _first_images(data, steps * batch)
    started = time.perf_counter()
    result = train(model, task, data, _recipe(target, batch), int(target["seed"]), mask=mask,
                   checkpoint_path=folder / CHECKPOINT_FILE, stop_at_iteration=steps + 1)
    seconds = time.perf_counter() - started
    weights = {name: tensor.detach().float().cpu() for name, tensor in model.state_dict().items()
               if tensor.is_floating_point()}
    pruned_nonzero = sum(int((model.get_parameter(name).detach()[~mask[name].to(torch.bool).to(
        model.get_parameter(name).device)] != 0).sum()) for name in mask)
    kept, total = count(mask)
    report: dict[str, Any] = {"iterations": result.iterations, "loss": result.last_loss, "batch": batch,
                              "pruned_nonzero": pruned_nonzero, "kept": kept, "total": total,
                              "device": str(pick_device()), "seconds": round(seconds, 3)}
    if not resume:
        torch.save(weights, folder / PREFLIGHT_WEIGHTS_FILE)
        return report
    reference = torch.load(folder / PREFLIGHT_WEIGHTS_FILE, weights_only=True)
    largest = max((float(tensor.abs().max()) for tensor in reference.values() if tensor.numel()), default=0.0)
    diff = max((float((weights[name] - tensor).abs().max()) for name, tensor in reference.items() if tensor.numel()),
               default=0.0)
    report.update(identical=all(torch.equal(weights[name], tensor) for name, tensor in reference.items()),
                  max_difference=diff, relative_difference=diff / largest if largest else diff,
                  tolerance=0.0 if pick_device().type == "cpu" else CUDA_RESUME_TOLERANCE)
    return report


def run(order: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run ``order``'s phase in ``folder``; a batch out of memory is halved until one fits."""
    resume = order["phase"] == "resume"
    batch = int(order["batch"])
    tried: list[int] = []
    while True:
        try:
            report = _steps(order, folder, resume, batch)
        except Exception as error:
            if not out_of_memory(error) or resume or batch == 1:
                raise
            tried.append(batch)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch = max(1, batch // 2)
            continue
        report["too_large"] = tried
        if report["loss"] is not None and not math.isfinite(report["loss"]):
            report["loss"] = str(report["loss"])  # JSON has no NaN: kept as text, and the check fails
        return report


def main(argv: list[str]) -> int:
    """``python -m workers.stages.preflight_steps ORDER.json``: writes ``<phase>.json`` beside it."""
    order_file = Path(argv[0])
    order = read_json(order_file)
    folder = order_file.parent
    try:
        report = run(order, folder)
    except Exception as error:
        report = {"error": f"{type(error).__name__}: {error}"[:2000]}
    atomic_write_json(folder / preflight_phase_files(order["phase"])[2], report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
