"""Each dataset fact is computed once per plan (issue 16): the label list of a data folder and
the size of its labelled subset, asked for by every stage's iterations per epoch, come from a
real cache; the subset's size is known without hashing every image."""
from __future__ import annotations

import random

import pytest
from conftest import ROOT

from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from workers.data import folders


def _empty_image_folder(root, classes=12, per_class=30):
    """An ImageFolder of empty files: planning lists the images and never opens one."""
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / split / f"n{c:04d}"
            folder.mkdir(parents=True)
            for i in range(count + c % 3):  # classes of unequal size: the quotas round differently
                (folder / f"{i}.jpg").touch()
    return root


@pytest.mark.parametrize("sweep", ["imagenet_resnet50_10pct_images.yaml", "imagenet_resnet50_10pct_classes.yaml"])
def test_a_subset_plan_reads_the_folder_and_sizes_the_subset_once(tmp_path, monkeypatch, sweep):
    root = _empty_image_folder(tmp_path / "imagenet")
    calls = {"labels": 0, "subset": 0}
    labels_of, subset_size = folders.ImageFolderFacts.labels, folders.subset_size

    def counted_labels(*args):
        calls["labels"] += 1  # the list of every training image's class, built from the folder's listing
        return labels_of(*args)

    def counted_subset(*args):
        calls["subset"] += 1
        return subset_size(*args)

    monkeypatch.setattr(folders.ImageFolderFacts, "labels", counted_labels)
    monkeypatch.setattr(folders, "subset_size", counted_subset)
    spec = load_spec(ROOT / "sweeps" / "paper" / sweep, [f"dataset.root={root}", f"workspace={tmp_path / 'ws'}"])
    plan = plan_sweep(spec)
    assert len(plan.stages) > 100  # dozens of stages asked for the facts
    assert calls["labels"] == 1
    assert calls["subset"] == 1  # the full set's size needs no subset; the labelled subset's is sized once


@pytest.mark.parametrize("kind", folders.SUBSET_KINDS)
def test_the_subset_size_is_the_size_of_the_subset_drawn(kind):
    rng = random.Random(3)
    for trial in range(30):
        labels = [rng.randrange(rng.randint(1, 15)) for _ in range(rng.randint(1, 400))]
        fraction = rng.choice([0.01, 0.1, 0.25, 0.5, 0.99, 1.0])
        assert folders.subset_size(labels, kind, fraction, trial) == \
            len(folders.subset_positions(labels, kind, fraction, trial))
