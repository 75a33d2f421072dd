"""The study's sources and evaluations on on-disk datasets, tiny: the labelled subset,
S4L and Exemplar on an ImageFolder read lazily from disk, and linear and fine-tuning
transfer between two ImageFolders (CPU, a few generated images in the real layout)."""
from __future__ import annotations

import json

import pytest
import torch

from data_folders import write_image_folder
from test_workers_support import run
from workers.pruning.masks import count

TINY = {"epochs": 1, "batch_size": 8, "optimizer": "adam", "lr": 0.003}
ROUND = {"kind": "prune_round", "rate": 0.2, "scope": "global"}
ARCH = {"name": "small_cnn", "width": 4}


def metrics(stage_dir):
    return json.loads((stage_dir / "metrics.json").read_text())


@pytest.fixture(autouse=True)
def no_loader_processes(monkeypatch):
    monkeypatch.setenv("PRUNESWEEP_LOADER_WORKERS", "0")  # a handful of images: decoding in-process is faster


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return [{"name": "image_folder", "root": str(write_image_folder(root / name, train_per_class=6, seed=seed)),
             "image_size": 16} for seed, name in enumerate(("source", "target"))]


def test_subset_tasks_and_exemplar_on_an_image_folder(folders, tmp_path):
    common = {"dataset": folders[0], "arch": ARCH, "recipe": TINY, "seed": 0}
    subset = {"task_options": {"label_subset": {"kind": "images_per_class", "fraction": 0.5, "seed": 0}}}
    for task, options in (("labels_10pct", subset), ("s4l", subset), ("exemplar", {})):
        m = run(tmp_path, f"dense_{task}", "dense", {**common, "task": task, "capture_iterations": [0], **options})
        assert m["metrics"]["epochs"] == 1
    assert metrics(tmp_path / "dense_labels_10pct")["iterations"] == 2  # 9 of 18 images at batch 8
    assert metrics(tmp_path / "dense_s4l")["iterations"] == 3  # all 18 images (x 4 rotations) at batch 8
    run(tmp_path, "imp", "imp", {**common, "task": "s4l", "rewind_iteration": 0, "mask_rule": {**ROUND, "layers": 2},
                                 **subset}, {"previous": "dense_s4l", "rewind": "dense_s4l"})
    ticket = run(tmp_path, "eval", "eval",
                 {**common, "task": "labels", "init": "winning_ticket", "rewind_iteration": 0, "source_task": "s4l",
                  "mask_rule": {"kind": "given"}, "pruned_layers": 2},
                 {"mask": "imp", "rewind": "dense_s4l"})["metrics"]
    assert ticket["fraction_remaining"] == pytest.approx(0.8, abs=0.01) and 0 <= ticket["top1"] <= 1


def test_transfer_between_image_folders(folders, tmp_path):
    source, target = folders
    common = {"dataset": source, "arch": ARCH, "recipe": TINY, "seed": 0, "task": "rotnet"}
    run(tmp_path, "dense", "dense", {**common, "capture_iterations": [0]})
    run(tmp_path, "imp1", "imp", {**common, "rewind_iteration": 0, "mask_rule": ROUND},
        {"previous": "dense", "rewind": "dense"})
    without_recipe = {key: value for key, value in common.items() if key != "recipe"}  # as the planner writes it
    features = run(tmp_path, "features", "features", {**without_recipe, "target": target}, {"model": "imp1"})["metrics"]
    cached = torch.load(tmp_path / "features" / "features.pt", weights_only=True)
    assert cached["train_features"].shape == (18, 8) and cached["test_features"].shape == (6, 8)
    linear = run(tmp_path, "linear", "linear_eval", {"target": target, "recipe": {**TINY, "epochs": 3},
                                                     "metric": "map", "seed": 0}, {"features": "features"})["metrics"]
    assert 0 < linear["top1"] <= 1 and linear["eval_dataset"] == "image_folder"
    during = run(tmp_path, "during", "finetune", {**common, "target": target, "mode": "prune_during"},
                 {"model": "dense", "mask": "imp1"})["metrics"]
    assert during["kept"] == features["kept"] == count(torch.load(tmp_path / "imp1" / "mask.pt", weights_only=True))[0]
