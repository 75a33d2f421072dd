"""The study's extra mask sources: exemplar, s4l, labels_10pct, adjusted random, layer-wise pruning.

Each runs for real on digits through the stage entry point (tiny recipes, CPU).
"""
from __future__ import annotations

import json

import pytest
import torch
from test_workers_support import COMMON, PRUNE_ROUND, load, run

from workers.data.datasets import dataset_spec, load_split
from workers.data.folders import subset_size
from workers.data.label_subset import subset_indices
from workers.models import build_model
from workers.pruning.masks import adjusted_random_mask, count, first_conv_names, is_subset, kept_after_rounds
from workers.stages.contract import StageContext
from workers.stages.kinds import ticket_model
from workers.stages.registry import parse_config
from workers.tasks.objectives import ROTATIONS, UNLABELLED, evaluate_accuracy, exemplar_augment, get_task

SUBSET = {"label_subset": {"kind": "images_per_class", "fraction": 0.1, "seed": 0}}


def metrics(stage_dir):
    return json.loads((stage_dir / "metrics.json").read_text())


# ---- the labelled subset -----------------------------------------------------------------

def test_subset_is_reproducible_stratified_and_of_the_planned_size():
    labels = load_split({"name": "digits"}).train_labels
    first = subset_indices(labels, "images_per_class", 0.1, seed=0)
    assert torch.equal(first, subset_indices(labels, "images_per_class", 0.1, seed=0))
    assert not torch.equal(first, subset_indices(labels, "images_per_class", 0.1, seed=1))
    assert len(first) == subset_size(labels.tolist(), "images_per_class", 0.1, 0) == 135
    assert len(set(first.tolist())) == len(first)
    for c in range(10):
        n_c = int((labels == c).sum())
        assert abs(int((labels[first] == c).sum()) - 0.1 * n_c) < 1
    classes = subset_indices(labels, "classes", 0.2, seed=3)
    picked = set(labels[classes].tolist())
    assert len(picked) == 2 and len(classes) == sum(int((labels == c).sum()) for c in picked)


# ---- tasks -------------------------------------------------------------------------------

def test_exemplar_views_differ_and_the_triplet_loss_prefers_matching_views():
    torch.manual_seed(0)
    images = load_split({"name": "digits"}).train_images[:16]
    one, two = exemplar_augment(images), exemplar_augment(images)
    assert one.shape == images.shape and not torch.allclose(one, two)
    task = get_task("exemplar")
    inputs, targets = task.make_batch(images, torch.zeros(16, dtype=torch.long))
    assert inputs.shape[0] == 32 and torch.equal(targets[:16], targets[16:])
    embeddings = torch.randn(16, 8)
    matched = torch.cat([embeddings, embeddings])  # each view next to its own image
    shuffled = torch.cat([embeddings, embeddings.roll(1, dims=0)])
    assert task.loss(matched, targets) < task.loss(shuffled, targets)
    assert task.score(matched, targets) == (16, 16)


def test_s4l_loss_uses_labels_only_where_known_and_only_unrotated():
    task = get_task("s4l")
    images = torch.randn(4, 1, 8, 8)
    labels = torch.tensor([3, UNLABELLED, 7, UNLABELLED])
    inputs, targets = task.make_batch(images, labels)
    assert inputs.shape[0] == 4 * ROTATIONS
    outputs = torch.randn(16, ROTATIONS + 10, requires_grad=True)
    task.loss(outputs, targets).backward()
    class_grads = outputs.grad[:, ROTATIONS:].abs().sum(dim=1)
    assert class_grads[[0, 2]].gt(0).all()  # unrotated, labelled
    assert class_grads[[1, 3]].eq(0).all() and class_grads[4:].eq(0).all()
    nothing_labelled = task.make_batch(images, torch.full((4,), UNLABELLED))[1]
    assert torch.isfinite(task.loss(torch.randn(16, 14), nothing_labelled))
    assert task.score(torch.randn(16, 14), targets)[1] == 2


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Dense runs and one layer-wise IMP level of exemplar, s4l and labels_10pct."""
    root = tmp_path_factory.mktemp("sources")
    for task in ("exemplar", "s4l", "labels_10pct"):
        options = {} if task == "exemplar" else {"task_options": SUBSET}
        # instance discrimination on 8x8 digits needs a few more epochs to rise clearly above chance
        recipe = {**COMMON["recipe"], "epochs": 5} if task == "exemplar" else COMMON["recipe"]
        run(root, f"dense_{task}", "dense", {**COMMON, "task": task, "recipe": recipe, "capture_iterations": [0],
                                             **options})
        run(root, f"imp_{task}", "imp", {**COMMON, "task": task, "rewind_iteration": 0, **options,
                                         "mask_rule": {**PRUNE_ROUND, "layers": 2}},
            {"previous": f"dense_{task}", "rewind": f"dense_{task}"})
    return root


def test_pretext_tasks_learn_something_real(sources):
    exemplar = metrics(sources / "dense_exemplar")
    assert exemplar["task_accuracy"] > 5 / 450  # instance retrieval among 450 test images; chance 1/450
    untrained = build_model(COMMON["arch"], 128, 1, seed=0)
    test = load_split({"name": "digits"})
    torch.manual_seed(0)
    assert exemplar["task_accuracy"] > evaluate_accuracy(untrained, get_task("exemplar"), test.test_images,
                                                         test.test_labels)
    s4l = metrics(sources / "dense_s4l")
    assert s4l["task_accuracy"] > 0.2  # labels of the test digits from 135 labelled images + rotations (chance 0.1)
    labels_10pct = metrics(sources / "dense_labels_10pct")
    assert labels_10pct["iterations"] == 2 * 2  # 135 images at batch 128: 2 steps per epoch
    assert s4l["iterations"] == 2 * 11  # every image (rotations) at batch 128


def test_layer_wise_imp_prunes_only_the_first_convolutions(sources):
    model = build_model(COMMON["arch"], 10, 1, seed=0)
    pruned = first_conv_names(model, 2)
    assert pruned == ["features.0.weight", "features.3.weight"]
    for task in ("exemplar", "s4l", "labels_10pct"):
        mask = load(sources / f"imp_{task}" / "mask.pt")
        m = metrics(sources / f"imp_{task}")
        assert all(mask[n].all() for n in mask if n not in pruned)
        layer_total = sum(mask[n].numel() for n in pruned)
        assert m["total"] == layer_total and m["kept"] == kept_after_rounds(layer_total, 0.2, 1)
        final = load(sources / f"imp_{task}" / "final.pt")
        assert all(not final[n][~mask[n]].any() for n in mask)


def test_winning_tickets_of_new_sources_retrain_on_labels(sources):
    for task in ("exemplar", "s4l", "labels_10pct"):
        m = run(sources, f"eval_{task}", "eval",
                {**COMMON, "task": "labels", "init": "winning_ticket", "rewind_iteration": 0, "source_task": task,
                 "mask_rule": {**PRUNE_ROUND, "layers": 2}},
                {"previous": f"imp_{task}", "rewind": f"dense_{task}"})["metrics"]
        assert m["top1"] > 0.3
        mask = load(sources / f"eval_{task}" / "mask.pt")
        assert is_subset(mask, load(sources / f"imp_{task}" / "mask.pt"))
        # the ticket keeps W_k's head only where it predicts the labels (labels_10pct)
        config = parse_config("eval", "k", {**COMMON, "init": "winning_ticket", "rewind_iteration": 0,
                                            "source_task": task, "mask_rule": {"kind": "full"}})
        ctx = StageContext(sources / f"eval_{task}", "k", config, {"rewind": sources / f"dense_{task}"})
        ticket = ticket_model(ctx, dataset_spec(COMMON["dataset"]), get_task("labels")).state_dict()
        rewound = load(sources / f"dense_{task}" / "rewind_0.pt")
        assert torch.equal(ticket["features.0.weight"], rewound["features.0.weight"])
        assert torch.equal(ticket["head.weight"], rewound["head.weight"]) == (task == "labels_10pct")


# ---- adjusted random ---------------------------------------------------------------------

def test_adjusted_random_prunes_exact_zeros_first():
    weights = {"a": torch.tensor([[0.0, 1.0, 2.0, 0.0]]), "b": torch.tensor([3.0, 0.0, -1.0, 4.0])}
    zeros = {"a": weights["a"] == 0, "b": weights["b"] == 0}
    for keep in (5, 3):  # 5 non-zero weights: keep 5 = every non-zero one; keep 3 = a random 3 of them
        mask = adjusted_random_mask(weights, ["a", "b"], keep, seed=1)
        assert count(mask)[0] == keep
        assert not any(mask[n][zeros[n]].any() for n in mask)
    seven = adjusted_random_mask(weights, ["a", "b"], 7, seed=1)
    assert all(seven[n][~zeros[n]].all() for n in seven) and count(seven)[0] == 7
    assert len({tuple(adjusted_random_mask(weights, ["a", "b"], 3, seed=s)["b"].tolist()) for s in range(8)}) > 1


def test_adjusted_random_mask_stage_skips_the_dense_runs_zeros(tmp_path, sources):
    dense = sources / "dense_labels_10pct"
    final = load(dense / "final.pt")
    name = "features.0.weight"
    final[name].view(-1)[:20] = 0  # a dense run that drove 20 weights to exactly zero
    zeroed = tmp_path / "zeroed"
    zeroed.mkdir()
    torch.save(final, zeroed / "final.pt")
    from workers.pruning.rules import derive_mask

    model = build_model(COMMON["arch"], 10, 1, seed=0)
    rule = {"kind": "adjusted_random", "keep": {"rate": 0.2, "level": 1}}
    mask = derive_mask(rule, model, {"previous": zeroed}, seed=0)
    assert not mask[name].view(-1)[:20].any()
    total = count(mask)[1]
    assert count(mask)[0] == kept_after_rounds(total, 0.2, 1)
    random = derive_mask({"kind": "random", "keep": {"rate": 0.2, "level": 1}}, model, {}, seed=0)
    assert random[name].view(-1)[:20].any()  # a plain random mask keeps some of them
