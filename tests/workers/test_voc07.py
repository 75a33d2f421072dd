"""PASCAL VOC 2007 as the paper evaluates it: the VOCdevkit layout read as 20-class multi-label
classification (difficult-only labels ignored), per-class linear SVMs with the cost
cross-validated, the VOC07 11-point mAP, fine-tuning with a multi-label loss; end to end from a
digits-pretrained pruned network on a generated VOCdevkit tree."""
from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from conftest import TINY
from data_folders import VOC_USED, write_voc07

import results
from orchestrator.cli import main
from workers.data import voc
from workers.data.folders import DataFolderError
from workers.stages.transfer import SVM_COSTS, svm_scores, voc07_average_precision, voc07_mean_average_precision

QUICK = {"epochs": 1, "batch_size": 256, "optimizer": "adam", "lr": 0.01}


@pytest.fixture(scope="module")
def devkit(tmp_path_factory):
    return write_voc07(tmp_path_factory.mktemp("voc") / "voc07")


def _column(name: str) -> int:
    return voc.VOC_CLASSES.index(name)


def test_labels_are_read_from_the_annotations_as_the_devkit_lists_them(devkit):
    facts = voc.voc_facts(str(devkit))
    assert facts.folder == devkit / "VOCdevkit" / "VOC2007" and len(facts.train_ids) == 24 and len(facts.test_ids) == 12
    rows = voc.voc_labels(str(devkit), "trainval")  # checked against <class>_trainval.txt on the way
    bird, cat, dog, person = (_column(n) for n in VOC_USED)
    # image 000002: cat, and dog marked difficult only -> dog is 0 (ignored), not a negative
    assert [rows[1][c] for c in (bird, cat, dog, person)] == [-1, 1, 0, -1]
    # image 000003: dog, person, and bird annotated both difficult and not -> bird present
    assert [rows[2][c] for c in (bird, cat, dog, person)] == [1, -1, 1, 1]
    assert all(row[_column("aeroplane")] == -1 for row in rows)
    assert sum(1 for row in rows if sum(v == 1 for v in row) > 1) >= 10  # several labels per image
    # the root may also be the VOC2007 folder itself, or the folder holding it
    assert voc.voc_facts(str(facts.folder)).train_ids == facts.train_ids
    assert voc.voc_facts(str(devkit / "VOCdevkit")).test_ids == facts.test_ids


def _copy(devkit, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(devkit, root)
    return root, root / "VOCdevkit" / "VOC2007"


def test_problems_are_named_with_their_file(devkit, tmp_path):
    root, folder = _copy(devkit, tmp_path)
    (folder / "Annotations" / "000003.xml").unlink()
    with pytest.raises(DataFolderError, match=r"Annotations/000003\.xml: missing; 000003 is listed in .*trainval"):
        voc.voc_facts(str(root))
    with pytest.raises(DataFolderError, match="no VOC2007/Annotations/"):
        voc.voc_facts(str(tmp_path))


@pytest.mark.parametrize("text, message", [
    ('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><annotation>&x;</annotation>', "declares a DTD"),
    ("<annotation><object><name>unicorn</name></object></annotation>", "object 1 has name 'unicorn'"),
    ("<annotation><object><name>cat</name><difficult>2</difficult></object></annotation>", "<difficult>2"),
    ("<annotation><object>", "not well-formed XML"),
    ("<notes/>", "expected <annotation>"),
])
def test_annotations_are_parsed_safely(tmp_path, text, message):
    path = tmp_path / "000001.xml"
    path.write_text(text)
    with pytest.raises(DataFolderError, match=f"{path}: .*{message}" if "DTD" not in message else message):
        voc.parse_annotation(path)


def test_trainval_must_be_train_and_val(devkit, tmp_path):
    root, folder = _copy(devkit, tmp_path)
    (folder / "ImageSets" / "Main" / "val.txt").write_text("000002\n")
    with pytest.raises(DataFolderError, match=r"trainval\.txt: not the union of train\.txt and val\.txt"):
        voc.voc_facts(str(root))


def test_annotations_disagreeing_with_the_class_lists_are_refused(devkit, tmp_path):
    root, folder = _copy(devkit, tmp_path)
    listing = folder / "ImageSets" / "Main" / "dog_test.txt"
    lines = listing.read_text().splitlines()
    flipped = lines[0].split()[0] + (" -1" if lines[0].split()[1] != "-1" else "  1")
    listing.write_text("\n".join([flipped, *lines[1:]]) + "\n")
    with pytest.raises(DataFolderError, match=r"dog_test\.txt: 000025 is labelled"):
        voc.voc_labels(str(root), "test")


def test_voc07_eleven_point_average_precision_by_hand():
    # ranked: pos, neg, pos, (difficult: ignored), neg, pos; 3 positives
    scores = torch.tensor([0.9, 0.8, 0.7, 0.65, 0.6, 0.5])
    labels = torch.tensor([1, -1, 1, 0, -1, 1])
    # precision at each rank: 1, 1/2, 2/3, 2/4, 3/5; recall: 1/3, 1/3, 2/3, 2/3, 1
    # thresholds 0..0.3 -> 1; 0.4..0.6 -> max(2/3, 2/4, 3/5) = 2/3; 0.7..1.0 -> 3/5
    expected = (4 * 1 + 3 * (2 / 3) + 4 * (3 / 5)) / 11
    assert voc07_average_precision(scores, labels) == pytest.approx(expected)
    # the difficult image counted as a negative instead would lower it: it is ignored
    assert voc07_average_precision(scores, torch.tensor([1, -1, 1, -1, -1, 1])) < expected
    assert voc07_average_precision(scores, torch.tensor([1, 1, 1, -1, -1, -1])) == 1.0
    both = voc07_mean_average_precision(torch.stack([scores, -scores], 1),
                                        torch.stack([labels, torch.full_like(labels, -1)], 1))
    assert both == pytest.approx(expected)  # a class without positives is left out of the mean


def test_svms_choose_their_cost_by_cross_validation_and_separate_separable_classes():
    generator = torch.Generator().manual_seed(0)
    labels = torch.where(torch.rand(60, 3, generator=generator) > 0.5, 1, -1)
    labels[:, 2] = -1  # no positive: not trained, scores 0
    labels[5, 0] = 0   # difficult: left out of the training of class 0
    features = torch.cat([labels[:, :2].float() * 3, torch.randn(60, 4, generator=generator)], 1)
    scores, costs = svm_scores(features[:40], labels[:40], features[40:], seed=0)
    assert scores.shape == (20, 3) and not scores[:, 2].any()
    assert costs[0] in SVM_COSTS and costs[1] in SVM_COSTS and costs[2] != costs[2]
    assert len(SVM_COSTS) == 26 and min(SVM_COSTS) == 1e-7 and max(SVM_COSTS) == 100.0
    assert voc07_mean_average_precision(scores[:, :2], labels[40:, :2]) == 1.0
    again, _ = svm_scores(features[:40], labels[:40], features[40:], seed=0)
    assert torch.equal(scores, again)


def test_the_cost_is_the_one_scikit_learns_cross_validation_prefers():
    """The same choice as Goyal et al.'s ``cross_val_score(LinearSVC(C), cv=3, scoring='average_precision')``."""
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import LinearSVC

    from workers.training.seeds import derive_seed

    generator = torch.Generator().manual_seed(1)
    labels = torch.where(torch.rand(45, 1, generator=generator) > 0.6, 1, -1)
    features = labels.float() * 0.4 + torch.randn(45, 5, generator=generator)  # overlapping classes
    costs = (1e-3, 0.01, 0.1, 1.0, 10.0)
    _, chosen = svm_scores(features, labels, features[:3], seed=0, costs=costs)
    x = (features / (features.norm(dim=1, keepdim=True) + 1e-5)).double().numpy()
    y = labels[:, 0].numpy()
    means = [cross_val_score(LinearSVC(C=cost, class_weight={1: 2, -1: 1}, max_iter=2000,
                                       random_state=derive_seed(0, "svm")),
                             x, y, cv=3, scoring="average_precision").mean() for cost in costs]
    assert len(set(round(m, 6) for m in means)) > 1  # the costs differ here: the choice means something
    assert chosen == [costs[max(range(len(costs)), key=lambda i: (means[i], -i))]]


def test_features_cached_with_one_label_per_image_are_refused_for_voc07(devkit, tmp_path):
    """Features a version reading VOC07 as a folder of classes cached carry (N,) labels."""
    from workers.stages.contract import LinearEvalConfig, StageContext
    from workers.training.loop import save_state_dict
    from workers.stages.transfer import FEATURES_FILE, run_linear_eval

    old = tmp_path / "features-old"
    old.mkdir()
    save_state_dict(old / FEATURES_FILE, {"train_features": torch.ones(3, 4), "train_labels": torch.zeros(3).long(),
                                          "test_features": torch.ones(2, 4), "test_labels": torch.zeros(2).long()})
    config = LinearEvalConfig.model_validate({"target": {"name": "voc07", "root": str(devkit)}, "classifier": "svm",
                                              "metric": "map", "seed": 0})
    with pytest.raises(ValueError, match="features-old holds single-label labels but voc07 is multi-label"):
        run_linear_eval(StageContext(tmp_path / "linear", "linear_eval-x", config, {"features": old}))


def _sweep(root, linear):
    sweep = copy.deepcopy(TINY)
    sweep.update(name="voc", mask_source=["rotnet"], init=["reinit"], pruning={"fractions": [0.8]},
                 recipes={"labels": dict(QUICK), "rotnet": dict(QUICK)})
    sweep["transfer"] = {"dataset": {"name": "voc07", "root": str(root), "image_size": 8, "channels": 1},
                         "linear": linear, "finetune": {"recipe": QUICK, "compare_prune_during": True}}
    return sweep


def test_a_digits_pretrained_pruned_network_transfers_to_voc07_end_to_end(devkit, write_sweep, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNESWEEP_LOADER_WORKERS", "0")  # a handful of images: decoding in-process is faster
    path = write_sweep(_sweep(devkit, {"classifier": "svm", "metric": "map"}))
    assert main(["launch", str(path), "--workers", "1", "--no-progress"]) == 0
    df = results.load(tmp_path / "ws")
    transfers = df[df["transfer"].notna()].set_index("transfer")
    assert set(transfers.index) == {"linear", "finetune", "finetune_prune_during"}
    assert set(transfers["metric"]) == {"map"} and set(transfers["eval_dataset"]) == {"voc07"}
    assert transfers["top1"].between(0, 1).all() and (transfers["top1"] > 0).all()
    done = [json.loads(p.read_text()) for p in (tmp_path / "ws").rglob("metrics.json")]
    linear = next(m for m in done if m.get("classifier") == "svm")
    assert linear["test_top1"] is None and linear["epochs"] == 0
    trained = [c for c in linear["svm_costs"] if c is not None]
    assert len(trained) == len(VOC_USED) and set(trained) <= set(SVM_COSTS)  # the other 16 classes: no positives


@pytest.mark.parametrize("change, where, what", [
    (lambda s: s["transfer"]["linear"].update(metric="top1"), "transfer.linear.metric", "multi-label"),
    (lambda s: s["transfer"]["linear"].update(recipe=QUICK), "transfer.linear.recipe", "not used with"),
    (lambda s: s["transfer"]["linear"].update(classifier="sgd"), "transfer.linear.recipe", "required with"),
    (lambda s: s.update(dataset=s["transfer"]["dataset"]), "dataset.name", "transfer target"),
    (lambda s: s["transfer"]["dataset"].update(channels=2), "transfer.dataset.channels", ""),
])
def test_bad_voc07_settings_exit_2_naming_the_key(devkit, write_sweep, capsys, change, where, what):
    sweep = _sweep(devkit, {"classifier": "svm", "metric": "map"})
    change(sweep)
    assert main(["plan", str(write_sweep(sweep))]) == 2
    err = capsys.readouterr().err
    assert where in err and what in err and "Traceback" not in err
