"""Places205 in the layout its distribution ships (list files + images256/), and a linear
classifier on the frozen features of a digits-pretrained pruned network, end to end."""
from __future__ import annotations

import copy
import shutil

import pytest
from conftest import TINY
from data_folders import PLACES_CLASSES, write_places205

import results
from orchestrator.cli import main
from workers.data.datasets import folder_facts, load_split
from workers.data.folders import DataFolderError
from workers.data.places import IMAGES_FOLDER, LISTS_FOLDER, places_facts

QUICK = {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01}


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    return write_places205(tmp_path_factory.mktemp("places") / "places205")


def test_the_list_files_give_the_splits_and_the_classes(places):
    facts = places_facts(str(places))
    assert facts.num_classes == len(PLACES_CLASSES) and facts.images == places / IMAGES_FOLDER
    assert facts.samples["train"][0] == ("a/abbey/00000000.jpg", 0) and len(facts.samples["val"]) == 6
    assert folder_facts({"name": "places205", "root": str(places)}) == {
        "num_classes": 3, "in_channels": 3, "train_size": 12, "test_size": 6}
    assert folder_facts({"name": "places205", "root": str(places), "channels": 1,
                          "subset": {"kind": "classes", "fraction": 0.34, "seed": 0}})["train_size"] == 4
    split = load_split({"name": "places205", "root": str(places), "image_size": 8, "channels": 1})
    assert split.train_images[0:3].shape == (3, 1, 8, 8) and split.test_labels.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("breakage, message", [
    (lambda root: (root / LISTS_FOLDER / "val_places205.csv").unlink(), r"val_places205\.csv: missing"),
    (lambda root: (root / LISTS_FOLDER / "train_places205.csv").write_text("a/abbey/00000000.jpg\n"),
     r"train_places205\.csv:1: expected '<relative path> <label>'"),
    (lambda root: (root / LISTS_FOLDER / "val_places205.csv").write_text("a/abbey/00000004.jpg 7\n"),
     r"val_places205\.csv: label 7 of image 1 is not among the train list's labels 0\.\.2"),
    (lambda root: (root / LISTS_FOLDER / "val_places205.csv").write_text("../../etc/passwd 0\n"),
     r"val_places205\.csv:1: '\.\./\.\./etc/passwd' must be a path inside the images folder"),
    (lambda root: (root / IMAGES_FOLDER / "a" / "abbey" / "00000000.jpg").unlink(),
     r"00000000\.jpg: missing; it is the first image of .*train_places205\.csv"),
    (lambda root: shutil.rmtree(root / "data"), r"images256: no such folder"),
])
def test_layout_problems_are_named_with_their_file(places, tmp_path, breakage, message):
    root = tmp_path / "copy"
    shutil.copytree(places, root)
    breakage(root)
    with pytest.raises(DataFolderError, match=message):
        places_facts(str(root))


def test_a_digits_pretrained_pruned_network_transfers_to_places205_end_to_end(places, write_sweep, tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("PRUNESWEEP_LOADER_WORKERS", "0")  # a handful of images: decoding in-process is faster
    sweep = copy.deepcopy(TINY)
    sweep.update(name="places", mask_source=["rotnet"], init=["reinit"], pruning={"fractions": [0.8]},
                 recipes={"labels": dict(QUICK), "rotnet": dict(QUICK)})
    sweep["transfer"] = {"dataset": {"name": "places205", "root": str(places), "image_size": 8, "channels": 1},
                         "linear": {"recipe": {**QUICK, "epochs": 2}}}
    assert main(["launch", str(write_sweep(sweep)), "--workers", "1", "--no-progress"]) == 0
    df = results.load(tmp_path / "ws")
    linear = df[df["transfer"] == "linear"]
    assert len(linear) == 1 and linear["metric"].iloc[0] == "top1" and linear["eval_dataset"].iloc[0] == "places205"
    assert linear["top1"].iloc[0] in {i / 6 for i in range(7)}  # a fraction of the 6 val images
