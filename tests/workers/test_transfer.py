"""Transfer evaluations for real on digits: cached features, linear classifiers (top-1, mAP),
fine-tuning of the pruned network and pruning during fine-tuning; and the pooled features
and layer-wise pruning of the paper's networks."""
from __future__ import annotations

import json

import pytest
import torch
from test_workers_support import COMMON, PRUNE_ROUND, load, run

from workers import catalog
from workers.models import build_model
from workers.pruning.masks import count, first_conv_names, prunable_names
from workers.stages.epochs import read_epochs
from workers.stages.transfer import mean_average_precision, pooled_features

TARGET = {"name": "digits"}
LINEAR = {"epochs": 4, "batch_size": 256, "optimizer": "adam", "lr": 0.01}
FINETUNE = {"epochs": 1, "batch_size": 128, "optimizer": "adam", "lr": 0.003}


@pytest.fixture(scope="module")
def pretext(tmp_path_factory):
    """A RotNet dense run, one IMP level of it, and the features of both on the target."""
    root = tmp_path_factory.mktemp("transfer")
    rotnet = {**COMMON, "task": "rotnet"}
    run(root, "dense", "dense", {**rotnet, "capture_iterations": [0]})
    run(root, "imp1", "imp", {**rotnet, "rewind_iteration": 0, "mask_rule": PRUNE_ROUND},
        {"previous": "dense", "rewind": "dense"})
    for model in ("dense", "imp1"):
        features = {key: value for key, value in rotnet.items() if key != "recipe"}  # features train nothing
        run(root, f"features_{model}", "features", {**features, "target": TARGET}, {"model": model})
    return root


def metrics(stage_dir):
    return json.loads((stage_dir / "metrics.json").read_text())


def test_features_are_the_pooled_input_of_the_head_of_the_pruned_network(pretext):
    cached = load(pretext / "features_imp1" / "features.pt")
    assert cached["train_features"].shape == (1347, 16) and cached["test_features"].shape == (450, 16)
    model = build_model(COMMON["arch"], 4, 1, seed=0)
    model.load_state_dict(load(pretext / "imp1" / "final.pt"))
    from workers.data.datasets import load_split

    test = load_split(TARGET)
    assert torch.allclose(pooled_features(model, test.test_images), cached["test_features"], atol=1e-5)
    m = metrics(pretext / "features_imp1")
    assert m["kept"] == metrics(pretext / "imp1")["kept"] and m["fraction_remaining"] == pytest.approx(0.8, abs=1e-3)


def test_linear_classifier_on_rotnet_features_beats_chance_and_reports_map(pretext):
    top1 = run(pretext, "linear_top1", "linear_eval",
               {"target": TARGET, "recipe": LINEAR, "metric": "top1", "seed": 0}, {"features": "features_imp1"})
    m = top1["metrics"]
    assert m["top1"] == m["test_top1"] > 0.3 and m["metric"] == "top1" and m["eval_dataset"] == "digits"
    epochs = read_epochs(pretext / "linear_top1")  # the linear layer's training, epoch by epoch (issue 27)
    assert [e["epoch"] for e in epochs] == list(range(1, LINEAR["epochs"] + 1)) and epochs[-1]["test_top1"] == m["top1"]
    mean_ap = run(pretext, "linear_map", "linear_eval",
                  {"target": TARGET, "recipe": LINEAR, "metric": "map", "seed": 0}, {"features": "features_imp1"})
    assert mean_ap["metrics"]["metric"] == "map" and 0.3 < mean_ap["metrics"]["top1"] <= 1


def test_mean_average_precision_by_hand():
    labels = torch.tensor([0, 1, 0, 1])
    perfect = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]])
    assert mean_average_precision(perfect, labels) == 1.0
    # class 0 ranked: rows 0 (pos), 3 (neg), 2 (pos), 1 (neg) -> AP = (1 + 2/3) / 2
    scores = torch.tensor([[0.9, 0.0], [0.1, 1.0], [0.5, 0.0], [0.6, 0.5]])
    ap0 = (1 + 2 / 3) / 2
    ap1 = (1 + 2 / 2) / 2  # class 1 ranked: rows 1 (pos), 3 (pos)
    assert mean_average_precision(scores, labels) == pytest.approx((ap0 + ap1) / 2)


def test_finetuning_keeps_the_mask_and_pruning_during_transfer_matches_its_count(pretext):
    common = {**COMMON, "task": "rotnet", "target": TARGET, "recipe": FINETUNE}
    pruned = run(pretext, "ft", "finetune", {**common, "mode": "pruned"}, {"model": "imp1"})["metrics"]
    mask, final = load(pretext / "ft" / "mask.pt"), load(pretext / "ft" / "final.pt")
    assert torch.equal(torch.cat([m.flatten() for m in mask.values()]),
                       torch.cat([m.flatten() for m in load(pretext / "imp1" / "mask.pt").values()]))
    assert all(not final[n][~mask[n]].any() for n in mask)
    assert final["head.weight"].shape[0] == 10 and pruned["top1"] > 0.3
    assert [e["epoch"] for e in read_epochs(pretext / "ft")] == list(range(1, FINETUNE["epochs"] + 1))
    during = run(pretext, "ft_during", "finetune", {**common, "mode": "prune_during"},
                 {"model": "dense", "mask": "imp1"})["metrics"]
    assert during["kept"] == pruned["kept"] and during["epochs"] == 2 * FINETUNE["epochs"]
    during_mask = load(pretext / "ft_during" / "mask.pt")
    assert count(during_mask)[0] == pruned["kept"]
    assert not torch.equal(during_mask["features.0.weight"], mask["features.0.weight"])  # its own magnitudes
    assert during["top1"] > 0.3


@pytest.mark.parametrize("name, size", [("resnet18", 32), ("vgg19", 32), ("alexnet", 64), ("resnet50", 32)])
def test_the_paper_networks_give_pooled_features_and_prune_layer_wise(name, size):
    convs = catalog.CONVOLUTIONS[name]  # what the planner checks pruning.layers against
    model = build_model({"name": name}, 10, 3, seed=0)
    images = torch.randn(2, 3, size, size)
    assert pooled_features(model, images).shape == (2, model.head.in_features)
    assert len(first_conv_names(model, None)) == len(prunable_names(model))
    layer_wise = first_conv_names(model, convs)
    assert len(layer_wise) == convs and layer_wise[0] == prunable_names(model)[0]
    with pytest.raises(ValueError, match=f"1..{convs}"):
        first_conv_names(model, convs + 1)
