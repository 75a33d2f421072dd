"""Transfer evaluations of a pruned pretext-trained network on a target dataset: the
functions of the ``features``, ``linear_eval`` and ``finetune`` stage kinds
(registered in :mod:`workers.stage_registry`).

- ``features``: the network of the ``model`` dependency (its ``final.pt``, pruned weights
  already zero) embeds the target's train and test images; the pooled features (the input
  of the head) are cached in ``features.pt`` so every classifier reads them without
  running the network again.
- ``linear_eval``: a linear classifier trained with the stage's recipe on the cached
  features (standardised with the training mean and std), on the GPU when there is one;
  ``metric`` top1, or map (mean over classes of the one-vs-rest average precision).
- ``finetune``: the whole network, body from the ``model`` dependency and a fresh head
  for the target's classes, trained on the target with the recipe, mask kept exact
  (``mode: pruned``). ``mode: prune_during`` (ours: the paper does not spell it out)
  fine-tunes the dense network of the ``model`` dependency, prunes it by global magnitude
  to as many weights as the ``mask`` dependency keeps, and fine-tunes it again.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.artifacts import METRICS_FILE
from workers.data import DataSplit, dataset_spec, load_split
from workers.image_folder import eval_batches
from workers.mask_rules import FINAL_FILE, MASK_FILE, load_tensors, previous_mask, pruned_names, save_mask
from workers.models import build_model, redraw_head
from workers.pruning import check_mask, count, prune_one_shot
from workers.seeds import derive_seed
from workers.stage_contract import (
    FeaturesConfig,
    FeaturesMetrics,
    FinetuneConfig,
    LinearEvalConfig,
    StageContext,
    StageOutcome,
)
from workers.tasks import evaluate_accuracy, get_task
from workers.training import cpu_state_dict, pick_device, save_state_dict, train

FEATURES_FILE = "features.pt"


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
    return FeaturesMetrics.model_validate_json((Path(path) / METRICS_FILE).read_text())


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


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present of the one-vs-rest average precision of ``scores``."""
    aps = []
    for c in range(scores.shape[1]):
        positive = labels == c
        if not positive.any():
            continue
        order = torch.argsort(scores[:, c], descending=True, stable=True)
        hits = positive[order].float()
        precision_at = hits.cumsum(0) / torch.arange(1, hits.numel() + 1, device=hits.device)
        aps.append(float((precision_at * hits).sum() / hits.sum()))
    return sum(aps) / len(aps) if aps else 0.0


def run_linear_eval(ctx: StageContext[LinearEvalConfig]) -> StageOutcome:
    """Train a linear classifier on the cached features; report top-1 or mAP on the test features."""
    seed = ctx.config.seed
    metric = ctx.config.metric
    cached = load_tensors(ctx.dep("features") / FEATURES_FILE)
    train_x, test_x = cached["train_features"], cached["test_features"]
    mean, std = train_x.mean(dim=0), train_x.std(dim=0).clamp(min=1e-6)
    # the (N, D) features stand in for images: the training loop only indexes and feeds them
    data = DataSplit((train_x - mean) / std, cached["train_labels"], (test_x - mean) / std, cached["test_labels"])
    num_classes = dataset_spec(ctx.config.target).num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "linear"))
        classifier = nn.Sequential()
        classifier.add_module("head", nn.Linear(train_x.shape[1], num_classes))
    labels = get_task("labels")
    result = train(classifier, labels, data, ctx.config.recipe, seed, checkpoint_path=ctx.checkpoint)
    device = pick_device()
    test_x, test_y = data.test_images.to(device), data.test_labels.to(device)
    top1 = evaluate_accuracy(classifier, labels, test_x, test_y)
    with torch.no_grad():
        classifier.eval()
        value = top1 if metric == "top1" else mean_average_precision(classifier(test_x), test_y)
    features_metrics = _features_metrics(ctx.dep("features"))
    metrics = {"top1": value, "metric": metric, "test_top1": top1, "eval_dataset": ctx.config.target["name"],
               "kept": features_metrics.kept, "total": features_metrics.total,
               "fraction_remaining": features_metrics.fraction_remaining,
               "epochs": result.epochs, "iterations": result.iterations,
               "wall_time_s": round(result.seconds, 3)}
    return StageOutcome([], metrics)


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
    labels = get_task("labels")
    recipe = ctx.config.recipe
    if mode == "pruned":
        mask = previous_mask(model, ctx.dep("model"))
        result = train(model, labels, data, recipe, seed, mask=mask, checkpoint_path=ctx.checkpoint)
        epochs, seconds = result.epochs, result.seconds
    elif mode == "prune_during":
        kept_as = check_mask(model, load_tensors(ctx.dep("mask") / MASK_FILE))
        names = pruned_names({"layers": ctx.config.pruned_layers}, model)
        kept, total = count({n: kept_as[n] for n in names})
        dense_phase = ctx.stage_dir / "finetune_dense.pt"
        first = train(model, labels, data, recipe, seed, checkpoint_path=ctx.stage_dir / "checkpoint_dense.pt")
        save_state_dict(dense_phase, cpu_state_dict(model))
        pruned = prune_one_shot(cpu_state_dict(model), kept / total if total else 1.0, names=names)
        mask = check_mask(model, {**{n: torch.ones_like(kept_as[n]) for n in kept_as}, **pruned})
        second = train(model, labels, data, recipe, seed, mask=mask, checkpoint_path=ctx.checkpoint)
        (ctx.stage_dir / "checkpoint_dense.pt").unlink(missing_ok=True)
        dense_phase.unlink(missing_ok=True)
        epochs, seconds = first.epochs + second.epochs, first.seconds + second.seconds
    else:
        raise ValueError(f"stage {ctx.key}: mode must be 'pruned' or 'prune_during', got {mode!r}")
    top1 = evaluate_accuracy(model, labels, data.test_images.to(pick_device()), data.test_labels.to(pick_device()))
    save_mask(ctx.stage_dir / MASK_FILE, mask)
    save_state_dict(ctx.stage_dir / FINAL_FILE, cpu_state_dict(model))
    metrics = {"top1": top1, "test_top1": top1, "metric": "top1", "eval_dataset": target.name, "mode": mode,
               **_pruning_metrics(ctx, mask, model), "epochs": epochs, "wall_time_s": round(seconds, 3)}
    return StageOutcome([MASK_FILE, FINAL_FILE], metrics)
