"""The functions of the training stage kinds (``dense``, ``rewind``, ``imp``, ``random_mask``,
``eval``): ``function(StageContext) -> StageOutcome``, registered in :mod:`workers.stages.registry`.

Every kind reads its parsed ``config`` (:mod:`workers.stages.contract`) and its verified
dependency folders, writes its artifacts
atomically into the stage folder and returns their names and its metrics.
:func:`workers.entry.run_stage` then writes ``metrics.json`` and ``DONE.json``.

Seeds: model initialisation and data order use ``seed``; a re-initialised model uses
``derive_seed(seed, "reinit")``, a fresh classification head ``derive_seed(seed, "head")``
and a random mask ``derive_seed(seed, "random_mask")``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.data.datasets import DatasetSpec, dataset_spec, load_split
from workers.models import build_model, redraw_head
from workers.pruning.mask_sources import task_declaration
from workers.pruning.masks import Mask, count, full_mask, prunable_names
from workers.pruning.rules import derive_mask, load_tensors, pruned_names, save_mask
from workers.stages.contract import (
    EVAL_INITS,
    DenseConfig,
    EvalConfig,
    ImpConfig,
    NetworkConfig,
    RandomMaskConfig,
    RewindConfig,
    StageContext,
    StageOutcome,
)
from workers.stages.epoch_tests import measuring_every
from workers.stages.epochs import recording
from workers.stages.paths import FINAL_FILE, MASK_FILE, rewind_file
from workers.tasks.objectives import Task, evaluate_accuracy, get_task
from workers.training.checkpoints import cpu_state_dict, save_state_dict
from workers.training.device import pick_device
from workers.training.loop import train
from workers.training.seeds import derive_seed

log = logging.getLogger(__name__)


def mask_metrics(mask: Mapping[str, torch.Tensor], names: list[str] | None = None) -> dict[str, Any]:
    """``kept``, ``total`` and ``fraction_remaining`` of a mask (over ``names`` when given:
    the layers a layer-wise rule prunes)."""
    kept, total = count(mask if names is None else {n: mask[n] for n in names})
    return {"kept": kept, "total": total, "fraction_remaining": kept / total if total else 1.0}


def zero_fraction(model: nn.Module) -> float:
    """Fraction of the prunable weights of ``model`` that are exactly zero."""
    params = dict(model.named_parameters())
    names = prunable_names(model)
    zeros = sum(int((params[n] == 0).sum()) for n in names)
    total = sum(params[n].numel() for n in names)
    return zeros / total if total else 0.0


def _dataset_and_task(ctx: StageContext[NetworkConfig], task_name: str) -> tuple[DatasetSpec, Task]:
    return dataset_spec(ctx.config.dataset), get_task(task_name)


def _model_for(ctx: StageContext[NetworkConfig], spec: DatasetSpec, task: Task, seed: int) -> nn.Module:
    model = build_model(ctx.config.arch, task.num_outputs(spec), spec.in_channels, seed)
    task.attach(model, spec, seed)
    return model


def _train_and_measure(ctx: StageContext[DenseConfig | ImpConfig | EvalConfig], model: nn.Module,
                       spec: DatasetSpec, task: Task, mask: Mask | None,
                       **train_options: Any) -> tuple[dict[str, Any], float]:
    """Train on the stage's recipe and data order seed; save ``final.pt``; return metrics, accuracy."""
    seed = ctx.config.seed
    data = training_data(ctx, task)
    with recording(ctx.stage_dir, ctx.key, seed) as epochs:
        result = train(model, task, data, ctx.config.recipe, seed, mask=mask,
                       checkpoint_path=ctx.checkpoint, on_epoch=measuring_every(
                           epochs.record, model, task, data.test_images, data.test_labels, ctx.config.recipe),
                       **train_options)
        accuracy = evaluate_accuracy(model, task, data.test_images, data.test_labels)
        epochs.measured(accuracy, task.label_head)
    wall_time = result.seconds  # over every attempt, up to the checkpoint each resumed from
    save_state_dict(ctx.stage_dir / FINAL_FILE, cpu_state_dict(model))
    log.info("%s test accuracy %.4f after %d epochs (%d iterations, %.2f s)", task.name, accuracy,
             result.epochs, result.iterations, wall_time)
    return {"epochs": result.epochs, "iterations": result.iterations,
            "wall_time_s": round(wall_time, 3)}, accuracy


def training_data(ctx: StageContext[NetworkConfig], task: Task):
    """The stage's dataset on the training device, prepared for ``task`` (its labelled subset)."""
    options = getattr(ctx.config, "task_options", None) or {}  # an eval trains on labels, which need none
    return task.prepare(load_split(ctx.config.dataset, pick_device()), options)


def _task_accuracy_metrics(task: Task, accuracy: float) -> dict[str, Any]:
    metrics = {"task_accuracy": accuracy}
    if task.label_head:
        metrics["test_top1"] = accuracy
    return metrics


def run_dense(ctx: StageContext[DenseConfig]) -> StageOutcome:
    """Train a dense model on ``task`` from ``seed``, capturing ``rewind_<k>.pt`` for each k."""
    spec, task = _dataset_and_task(ctx, ctx.config.task)
    model = _model_for(ctx, spec, task, ctx.config.seed)
    captures = sorted(set(ctx.config.capture_iterations))
    run, accuracy = _train_and_measure(ctx, model, spec, task, None,
                                       capture_iterations=captures, capture_dir=ctx.stage_dir)
    metrics = {**_task_accuracy_metrics(task, accuracy), **mask_metrics(full_mask(model)),
               "zero_fraction": zero_fraction(model), **run}
    return StageOutcome([FINAL_FILE, *(rewind_file(k) for k in captures)], metrics)


def run_rewind(ctx: StageContext[RewindConfig]) -> StageOutcome:
    """Replay the dense training of the same config for exactly ``rewind_iteration`` steps."""
    spec, task = _dataset_and_task(ctx, ctx.config.task)
    seed = ctx.config.seed
    k = ctx.config.rewind_iteration
    model = _model_for(ctx, spec, task, seed)
    data = training_data(ctx, task)
    train(model, task, data, ctx.config.recipe, seed, checkpoint_path=ctx.checkpoint,
          capture_iterations=[k], capture_dir=ctx.stage_dir, stop_at_iteration=k)
    return StageOutcome([rewind_file(k)], {"iteration": k})


def load_rewind_weights(rewind_dir: Path, iteration: int) -> dict[str, torch.Tensor]:
    """The weights ``rewind_<iteration>.pt`` of a dense or rewind stage folder."""
    path = Path(rewind_dir) / rewind_file(iteration)
    if not path.exists():
        raise ValueError(f"{Path(rewind_dir).name} has no {path.name}")
    return load_tensors(path)


def run_imp(ctx: StageContext[ImpConfig]) -> StageOutcome:
    """One IMP level: mask from ``mask_rule``, weights rewound to W_k * mask, masked training."""
    spec, task = _dataset_and_task(ctx, ctx.config.task)
    seed = ctx.config.seed
    model = _model_for(ctx, spec, task, seed)
    mask = derive_mask(ctx.config.mask_rule, model, ctx.deps, seed)
    model.load_state_dict(load_rewind_weights(ctx.dep("rewind"), ctx.config.rewind_iteration))
    save_mask(ctx.stage_dir / MASK_FILE, mask)
    run, accuracy = _train_and_measure(ctx, model, spec, task, mask)
    metrics = {**_task_accuracy_metrics(task, accuracy), **mask_metrics(mask, _layer_names(ctx, model)),
               "zero_fraction": zero_fraction(model), **run}
    return StageOutcome([MASK_FILE, FINAL_FILE], metrics)


def run_random_mask(ctx: StageContext[RandomMaskConfig]) -> StageOutcome:
    """Draw a random mask (``mask_rule`` of kind ``random``) for the architecture."""
    rule = ctx.config.mask_rule  # of kind random or adjusted_random (the contract checks)
    spec, task = _dataset_and_task(ctx, ctx.config.task)
    seed = ctx.config.seed
    model = _model_for(ctx, spec, task, seed)
    mask = derive_mask(rule, model, ctx.deps, seed)
    save_mask(ctx.stage_dir / MASK_FILE, mask)
    return StageOutcome([MASK_FILE], mask_metrics(mask, _layer_names(ctx, model)))


def _layer_names(ctx: StageContext[ImpConfig | RandomMaskConfig | EvalConfig], model: nn.Module) -> list[str]:
    """The weights the stage's mask rule prunes (every prunable one unless it is layer-wise)."""
    rule = ctx.config.mask_rule
    layers = getattr(ctx.config, "pruned_layers", None)  # a layer-wise eval says it; imp's rule does
    if layers is None:
        layers = rule.get("layers")
    return pruned_names({"layers": layers}, model)


def ticket_model(ctx: StageContext[EvalConfig], spec: DatasetSpec, labels: Task) -> nn.Module:
    """The labels model an eval stage starts from, before masking (see :func:`run_eval`)."""
    seed = ctx.config.seed
    init = ctx.config.init
    if init == "reinit":
        return _model_for(ctx, spec, labels, derive_seed(seed, "reinit"))
    if init != "winning_ticket":
        raise ValueError(f"stage {ctx.key}: init must be one of {EVAL_INITS}, got {init!r}")
    model = _model_for(ctx, spec, labels, seed)
    if ctx.config.rewind_iteration is None:
        raise ValueError(f"stage {ctx.key}: init winning_ticket needs config.rewind_iteration")
    weights = load_rewind_weights(ctx.dep("rewind"), ctx.config.rewind_iteration)
    if task_declaration(ctx.config.source_task).label_head:
        model.load_state_dict(weights)
        return model
    body = {name: tensor for name, tensor in weights.items() if not name.startswith("head.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not name.startswith("head.") for name in missing):
        raise ValueError(f"stage {ctx.key}: rewind weights do not fit the model "
                         f"(missing {missing}, unexpected {unexpected})")
    redraw_head(model, derive_seed(seed, "head"))
    return model


def run_eval(ctx: StageContext[EvalConfig]) -> StageOutcome:
    """Train a masked labels model from a winning ticket or a re-initialisation; report top-1.

    ``init: winning_ticket`` loads ``rewind_<k>.pt`` of the ``rewind`` dependency: the
    whole state when ``source_task`` is ``labels``, otherwise everything but the head,
    which is drawn fresh from ``derive_seed(seed, "head")``. ``init: reinit`` builds a
    fresh model from ``derive_seed(seed, "reinit")``.
    """
    spec, labels = _dataset_and_task(ctx, "labels")
    model = ticket_model(ctx, spec, labels)
    mask = derive_mask(ctx.config.mask_rule, model, ctx.deps, ctx.config.seed)
    save_mask(ctx.stage_dir / MASK_FILE, mask)
    run, accuracy = _train_and_measure(ctx, model, spec, labels, mask)
    metrics = {"top1": accuracy, "test_top1": accuracy, **mask_metrics(mask, _layer_names(ctx, model)), **run}
    return StageOutcome([MASK_FILE, FINAL_FILE], metrics)
