"""Transfer evaluations of a pruned pretext-trained network on a target dataset: the
functions of the ``features``, ``linear_eval`` and ``finetune`` stage kinds
(registered in :mod:`workers.stages.registry`).

- ``features``: the network of the ``model`` dependency (its ``final.pt``, pruned weights
  already zero) embeds the target's train and test images; the pooled features (the input
  of the head) are cached in ``features.pt`` so every classifier reads them without
  running the network again.
- ``linear_eval``: a linear classifier on the cached features. ``classifier: sgd``: a linear
  layer trained with the stage's recipe on the features standardised with the training
  mean and std, on the GPU when there is one. ``classifier: svm`` (Goyal et al. 2019's
  benchmark, :func:`workers.stages.svm.svm_scores`): per-class linear SVMs on the
  L2-normalised features, each class's cost chosen by 3-fold cross-validation on the training
  split among :data:`SVM_COSTS`, the difficult-only images of a multi-label target trained on
  as negatives or left out (the config's ``difficult``). ``metric`` top1, or map: on a
  multi-label target (VOC07) the mean over the classes of the benchmark's average precision
  (:mod:`workers.stages.average_precision`; difficult-only labels ignored), the devkit's
  11-point mAP beside it (``map_11point``); on a single-label one the mean one-vs-rest
  (non-interpolated) average precision (:func:`mean_average_precision`).
- ``finetune``: the whole network, body from the ``model`` dependency and a fresh head
  for the target's classes, trained on the target with the recipe, mask kept exact
  (``mode: pruned``); on a multi-label target with a binary cross-entropy per class
  (difficult-only labels ignored), reporting both mAPs as ``linear_eval`` does. ``mode: prune_during`` (ours:
  the paper does not spell it out) fine-tunes the dense network of the ``model``
  dependency, prunes it by global magnitude to as many weights as the ``mask`` dependency
  keeps, and fine-tunes it again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workers.data.datasets import DataSplit, dataset_spec, load_split
from workers.data.image_folder import eval_batches
from workers.models import build_model, redraw_head
from workers.pruning.masks import check_mask, count, prune_one_shot
from workers.pruning.rules import load_tensors, previous_mask, pruned_names, save_mask
from workers.stages.average_precision import (
    mean_average_precision,
    multilabel_metrics,
    voc07_average_precision,
    voc07_mean_average_precision,
)
from workers.stages.contract import (
    FeaturesConfig,
    FeaturesMetrics,
    FinetuneConfig,
    LinearEvalConfig,
    StageContext,
    StageOutcome,
)
from workers.stages.epoch_tests import measuring_every
from workers.stages.epochs import recording
from workers.stages.paths import (
    DENSE_PHASE_CHECKPOINT_FILE,
    DENSE_PHASE_FILE,
    FEATURES_FILE,
    FINAL_FILE,
    MASK_FILE,
    METRICS_FILE,
)
from workers.stages.svm import SVM_COSTS, SVM_FOLDS, svm_scores
from workers.stages.workspace_files import read_bytes
from workers.tasks.objectives import Task, evaluate_accuracy, get_task
from workers.training.checkpoints import cpu_state_dict, save_state_dict
from workers.training.device import pick_device
from workers.training.loop import train
from workers.training.seeds import derive_seed


def _source_model(ctx: StageContext[FeaturesConfig | FinetuneConfig], seed: int) -> nn.Module:
    """The pretext network of the ``model`` dependency with its trained weights."""
    source = dataset_spec(ctx.config.dataset)
    task = get_task(ctx.config.task)
    model = build_model(ctx.config.arch, task.num_outputs(source), source.in_channels, seed)
    task.attach(model, source, seed)
    model.load_state_dict(load_tensors(ctx.dep("model") / FINAL_FILE))
    return model


def _target_split(ctx: StageContext[FeaturesConfig | FinetuneConfig]) -> tuple[Any, DataSplit]:
    source = dataset_spec(ctx.config.dataset)
    target = dataset_spec(ctx.config.target)
    if target.in_channels != source.in_channels:
        raise ValueError(f"stage {ctx.key}: target {target.name} has {target.in_channels} channels, the network "
                         f"was trained on {source.in_channels}")
    return target, load_split(ctx.config.target, pick_device())


def _features_metrics(path: Path) -> FeaturesMetrics:
    """The metrics of a (done) features stage, read with its kind's model."""
    return FeaturesMetrics.model_validate_json(read_bytes(Path(path) / METRICS_FILE))


def _pruning_metrics(ctx: StageContext[FeaturesConfig | FinetuneConfig], mask: dict, model: nn.Module) -> dict:
    names = pruned_names({"layers": ctx.config.pruned_layers}, model)
    kept, total = count({n: mask[n] for n in names})
    return {"kept": kept, "total": total, "fraction_remaining": kept / total if total else 1.0}


@torch.no_grad()
def pooled_features(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The input of ``model.head`` for every image (eval mode), as float32 on the images' device."""
    captured: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float()))
    model.eval()
    try:
        for batch in eval_batches(images, batch_size):
            model(batch)
    finally:
        hook.remove()
    return torch.cat(captured).flatten(1)


@torch.no_grad()
def _outputs(model: nn.Module, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The outputs of ``model`` (eval mode) for every image, as float32 on the CPU."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(batch).float().cpu() for batch in eval_batches(images, batch_size)])
    finally:
        model.train(was_training)


def run_features(ctx: StageContext[FeaturesConfig]) -> StageOutcome:
    """Extract and cache the pooled features of the target's train and test images."""
    seed = ctx.config.seed
    model = _source_model(ctx, seed)
    mask = previous_mask(model, ctx.dep("model"))
    _, data = _target_split(ctx)
    model.to(pick_device())
    started = time.perf_counter()
    features = {"train_features": pooled_features(model, data.train_images).cpu(),
                "train_labels": data.train_labels.cpu(),
                "test_features": pooled_features(model, data.test_images).cpu(),
                "test_labels": data.test_labels.cpu()}
    save_state_dict(ctx.stage_dir / FEATURES_FILE, features)
    metrics = {**_pruning_metrics(ctx, mask, model), "dim": int(features["train_features"].shape[1]),
               "wall_time_s": round(time.perf_counter() - started, 3)}
    return StageOutcome([FEATURES_FILE], metrics)


def _multilabel_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    known = (targets != 0).float()
    losses = F.binary_cross_entropy_with_logits(outputs.float(), (targets == 1).float(), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def _multilabel_score(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    wrong = ((outputs > 0) != (targets == 1)) & (targets != 0)
    return (~wrong.any(dim=1)).sum(), targets.shape[0]


#: a multi-label target's training: binary cross-entropy per class on the labels 1 / -1, the
#: difficult-only labels (0) ignored; an image counts as correct when all its known labels are.
MULTILABEL = Task("multilabel", lambda spec: spec.num_classes, lambda images, labels: (images, labels),
                  loss=_multilabel_loss, score=_multilabel_score)


def _one_vs_rest(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices (N,) as rows of 1 / -1; multi-label rows (N, C) as they are."""
    if labels.dim() == 2:
        return labels
    return torch.where(torch.nn.functional.one_hot(labels, num_classes) == 1, 1, -1)


def run_linear_eval(ctx: StageContext[LinearEvalConfig]) -> StageOutcome:
    """Train a linear classifier on the cached features; report top-1 or mAP on the test features."""
    seed = ctx.config.seed
    cached = load_tensors(ctx.dep("features") / FEATURES_FILE)
    target = dataset_spec(ctx.config.target)
    if cached["train_labels"].dim() != (2 if target.multi_label else 1):
        raise ValueError(f"stage {ctx.key}: the features stage {ctx.dep('features').name} holds "
                         f"{'single' if target.multi_label else 'multi'}-label labels but {target.name} is "
                         f"{'multi' if target.multi_label else 'single'}-label (features cached by an older "
                         "version that read VOC07 as a folder of classes?): remove that stage's folder to recompute it")
    if ctx.config.classifier == "svm":
        return _linear_svm(ctx, cached, target)
    train_x, test_x = cached["train_features"], cached["test_features"]
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp(min=1e-6)
    # the (N, D) features stand in for images: the training loop only indexes and feeds them
    data = DataSplit((train_x - mean) / std, cached["train_labels"], (test_x - mean) / std, cached["test_labels"])
    num_classes = target.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "linear"))
        classifier = nn.Sequential()
        classifier.add_module("head", nn.Linear(train_x.shape[1], num_classes))
    labels = MULTILABEL if target.multi_label else get_task("labels")
    assert ctx.config.recipe is not None, "the stage contract gives classifier sgd a recipe"
    device = pick_device()
    test_x, test_y = data.test_images.to(device), data.test_labels.to(device)
    with recording(ctx.stage_dir, ctx.key, seed) as epochs:
        on_epoch = epochs.record if target.multi_label else measuring_every(epochs.record, classifier, labels,
                                                                            test_x, test_y, ctx.config.recipe)
        result = train(classifier, labels, data, ctx.config.recipe, seed, checkpoint_path=ctx.checkpoint,
                       on_epoch=on_epoch)
        with torch.no_grad():
            classifier.eval()
            scores = classifier(test_x).float().cpu()
        top1 = None if target.multi_label else evaluate_accuracy(classifier, labels, test_x, test_y)
        if top1 is not None:
            epochs.measured(top1, label_head=True)
    values = _metric_values(ctx, scores, test_y.cpu(), target.multi_label, top1)
    return StageOutcome([], {**_linear_metrics(ctx, values, top1), "epochs": result.epochs,
                             "iterations": result.iterations, "wall_time_s": round(result.seconds, 3)})


def _metric_values(ctx: StageContext[LinearEvalConfig], scores: torch.Tensor, labels: torch.Tensor,
                   multi_label: bool, top1: float | None) -> dict[str, float]:
    """``top1``: the value of the config's ``metric``; on a multi-label target also ``map_11point``."""
    metric = ctx.config.metric
    if multi_label:
        if metric != "map":
            raise ValueError("a multi-label target is evaluated by map, not top1")
        return multilabel_metrics(scores, labels, ctx.config.average_precision)
    assert top1 is not None
    return {"top1": top1 if metric == "top1" else mean_average_precision(scores, labels)}


def _linear_metrics(ctx: StageContext[LinearEvalConfig], values: dict[str, float],
                    top1: float | None) -> dict[str, Any]:
    features_metrics = _features_metrics(ctx.dep("features"))
    return {**values, "metric": ctx.config.metric, "test_top1": top1, "eval_dataset": ctx.config.target["name"],
            "kept": features_metrics.kept, "total": features_metrics.total,
            "fraction_remaining": features_metrics.fraction_remaining}


def _linear_svm(ctx: StageContext[LinearEvalConfig], cached: dict, target: Any) -> StageOutcome:
    """Per-class linear SVMs on the cached features (see :func:`svm_scores`)."""
    started = time.perf_counter()
    train_y, test_y = cached["train_labels"].long(), cached["test_labels"].long()
    scores, costs = svm_scores(cached["train_features"], _one_vs_rest(train_y, target.num_classes),
                               cached["test_features"], ctx.config.seed, difficult=ctx.config.difficult)
    top1 = None if target.multi_label else float((scores.argmax(dim=1) == test_y).double().mean())
    values = _metric_values(ctx, scores, test_y, target.multi_label, top1)
    return StageOutcome([], {**_linear_metrics(ctx, values, top1), "classifier": "svm",
                             "svm_costs": [c if c == c else None for c in costs],
                             "epochs": 0, "iterations": 0, "wall_time_s": round(time.perf_counter() - started, 3)})


def _finetune_model(ctx: StageContext[FinetuneConfig], seed: int, num_classes: int) -> nn.Module:
    """The pretext network's body with a fresh head of ``num_classes`` outputs."""
    source = dataset_spec(ctx.config.dataset)
    pretext = _source_model(ctx, seed)
    model = build_model(ctx.config.arch, num_classes, source.in_channels, seed)
    body = {name: tensor for name, tensor in pretext.state_dict().items() if not name.startswith("head.")}
    model.load_state_dict(body, strict=False)
    redraw_head(model, derive_seed(seed, "transfer_head"))
    return model


def run_finetune(ctx: StageContext[FinetuneConfig]) -> StageOutcome:
    """Fine-tune the pruned network (``mode: pruned``) or prune during fine-tuning (``prune_during``)."""
    seed = ctx.config.seed
    mode = ctx.config.mode
    target, data = _target_split(ctx)
    model = _finetune_model(ctx, seed, target.num_classes)
    labels = MULTILABEL if target.multi_label else get_task("labels")
    recipe = ctx.config.recipe
    if mode == "pruned":
        mask = previous_mask(model, ctx.dep("model"))
        with recording(ctx.stage_dir, ctx.key, seed) as recorder:  # the test top-1 comes after, unrecorded
            on_epoch = recorder.record if target.multi_label else measuring_every(
                recorder.record, model, labels, data.test_images, data.test_labels, recipe)
            result = train(model, labels, data, recipe, seed, mask=mask, checkpoint_path=ctx.checkpoint,
                           on_epoch=on_epoch)
        epochs, seconds = result.epochs, result.seconds
    elif mode == "prune_during":
        kept_as = check_mask(model, load_tensors(ctx.dep("mask") / MASK_FILE))
        names = pruned_names({"layers": ctx.config.pruned_layers}, model)
        kept, total = count({n: kept_as[n] for n in names})
        dense_phase = ctx.stage_dir / DENSE_PHASE_FILE
        first = train(model, labels, data, recipe, seed, checkpoint_path=ctx.stage_dir / DENSE_PHASE_CHECKPOINT_FILE)
        save_state_dict(dense_phase, cpu_state_dict(model))
        pruned = prune_one_shot(cpu_state_dict(model), kept / total if total else 1.0, names=names)
        mask = check_mask(model, {**{n: torch.ones_like(kept_as[n]) for n in kept_as}, **pruned})
        second = train(model, labels, data, recipe, seed, mask=mask, checkpoint_path=ctx.checkpoint)
        (ctx.stage_dir / DENSE_PHASE_CHECKPOINT_FILE).unlink(missing_ok=True)
        dense_phase.unlink(missing_ok=True)
        epochs, seconds = first.epochs + second.epochs, first.seconds + second.seconds
    else:
        raise ValueError(f"stage {ctx.key}: mode must be 'pruned' or 'prune_during', got {mode!r}")
    device = pick_device()
    if target.multi_label:
        values, top1, metric = multilabel_metrics(_outputs(model, data.test_images.to(device)), data.test_labels.cpu(),
                                                  ctx.config.average_precision), None, "map"
    else:
        top1 = evaluate_accuracy(model, labels, data.test_images.to(device), data.test_labels.to(device))
        values, metric = {"top1": top1}, "top1"
    save_mask(ctx.stage_dir / MASK_FILE, mask)
    save_state_dict(ctx.stage_dir / FINAL_FILE, cpu_state_dict(model))
    metrics = {**values, "test_top1": top1, "metric": metric, "eval_dataset": target.name, "mode": mode,
               **_pruning_metrics(ctx, mask, model), "epochs": epochs, "wall_time_s": round(seconds, 3)}
    return StageOutcome([MASK_FILE, FINAL_FILE], metrics)


#: what this module offered before the metrics and the SVMs got modules of their own.
__all__ = ["FEATURES_FILE", "MULTILABEL", "SVM_COSTS", "SVM_FOLDS", "mean_average_precision", "pooled_features",
           "run_features", "run_finetune", "run_linear_eval", "svm_scores", "voc07_average_precision",
           "voc07_mean_average_precision"]
