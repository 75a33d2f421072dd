"""PASCAL VOC 2007 as the paper evaluates it: the VOCdevkit layout read as 20-class multi-label
classification, per-class linear SVMs with the cost cross-validated and the difficult-only
images as training negatives (ignored at test), the benchmark's mAP beside the VOC07 11-point
mAP, fine-tuning with a multi-label loss; end to end from a digits-pretrained pruned network on
a generated VOCdevkit tree."""
from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
from conftest import TINY
from data_folders import VOC_USED, write_voc07

import results
from orchestrator.cli import main
from workers.data import voc
from workers.data.folders import DataFolderError
from workers.stages.average_precision import (
    benchmark_average_precision,
    benchmark_mean_average_precision,
    multilabel_metrics,
    voc07_average_precision,
    voc07_mean_average_precision,
)
from workers.stages.svm import SVM_COSTS, svm_scores

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


def test_the_benchmark_average_precision_by_hand():
    """Goyal et al.'s calculate_ap: over the ranks where recall grows, the growth times the best
    precision at that rank or below; the 11-point AP of the same ranking is another number."""
    # ranked: pos, neg, neg, (difficult: ignored), pos, pos; 3 positives
    scores = torch.tensor([0.9, 0.8, 0.7, 0.65, 0.6, 0.5])
    labels = torch.tensor([1, -1, -1, 0, 1, 1])
    # precision where recall grows: 1 (rank 1), 2/4 (rank 4), 3/5 (rank 5); at rank 4 the best
    # precision from there on is 3/5
    expected = (1 + 3 / 5 + 3 / 5) / 3
    assert benchmark_average_precision(scores, labels) == pytest.approx(expected, abs=1e-15)
    # the 11-point AP: recall 0..0.3 -> 1; 0.4..1.0 -> 3/5
    eleven = (4 * 1 + 7 * (3 / 5)) / 11
    assert voc07_average_precision(scores, labels) == pytest.approx(eleven, abs=1e-15)
    # no interpolation (scikit-learn's average_precision_score) would give (1 + 2/4 + 3/5) / 3: it is not that
    assert benchmark_average_precision(scores, labels) != pytest.approx((1 + 2 / 4 + 3 / 5) / 3)
    # the difficult image counted as a negative would lower it (precision 2/5 at rank 5, raised to
    # the 3/6 of rank 6): it is ignored
    assert benchmark_average_precision(scores, torch.tensor([1, -1, -1, -1, 1, 1])) == \
        pytest.approx((1 + 3 / 6 + 3 / 6) / 3, abs=1e-15)
    assert benchmark_average_precision(scores, torch.tensor([1, 1, -1, 0, -1, -1])) == 1.0
    assert math.isnan(benchmark_average_precision(scores, torch.full((6,), -1)))


def test_the_mean_over_classes_and_what_a_multi_label_stage_reports():
    # class 0 as above; class 1: ranked neg, pos, pos: precision 1/2 at rank 2 is raised to rank 3's 2/3
    scores = torch.tensor([[0.9, 0.3], [0.8, 0.2], [0.7, 0.1], [0.65, 0.0], [0.6, -0.1], [0.5, -0.2]])
    labels = torch.tensor([[1, -1], [-1, 1], [-1, 1], [0, -1], [1, -1], [1, -1]])
    first, second = (1 + 3 / 5 + 3 / 5) / 3, (2 / 3 + 2 / 3) / 2
    assert benchmark_mean_average_precision(scores, labels) == pytest.approx((first + second) / 2, abs=1e-15)
    # recall 1/2 at rank 2 (precision 1/2), 1 at rank 3 (2/3): every threshold's best is 2/3
    eleven = ((4 + 7 * 3 / 5) / 11 + 2 / 3) / 2
    reported = multilabel_metrics(scores, labels)
    assert reported == pytest.approx({"top1": (first + second) / 2, "map_11point": eleven}, abs=1e-15)
    # a stage planned before issue 28 reports what it did then: the 11-point mAP in top1, alone
    assert multilabel_metrics(scores, labels, "voc07_11point") == pytest.approx({"top1": eleven}, abs=1e-15)
    # a class without positives is left out of both means
    padded = torch.cat([labels, torch.full((6, 1), -1)], 1), torch.cat([scores, scores[:, :1]], 1)
    assert multilabel_metrics(padded[1], padded[0]) == pytest.approx(reported, abs=1e-15)


def _difficult_case():
    """Two classes; in class 0, images 0-5 are difficult-only and lie among the positives."""
    generator = torch.Generator().manual_seed(3)
    positive = torch.arange(60) % 3 == 0
    labels = torch.where(positive, 1, -1)[:, None].repeat(1, 2)
    labels[:, 1] = torch.where(torch.arange(60) % 2 == 0, 1, -1)
    labels[:6, 0] = 0
    features = torch.randn(60, 5, generator=generator) * 0.6
    features[:, 0] += torch.where(positive | (labels[:, 0] == 0), 1.0, -1.0)
    features[:, 1] += labels[:, 1].float()
    return features, labels


def test_svms_train_on_difficult_only_images_as_negatives_unless_told_to_ignore_them():
    """Goyal et al.'s train_svm_kfold.py trains on difficult-only images as negatives (the default);
    ``difficult="ignore"`` leaves them out of the training."""
    features, labels = _difficult_case()
    costs = (0.01, 0.1, 1.0)
    default, default_costs = svm_scores(features[:45], labels[:45], features[45:], seed=0, costs=costs)
    as_negatives = torch.where(labels[:45] == 0, -1, labels[:45])  # no 0 left: nothing to ignore
    relabelled, relabelled_costs = svm_scores(features[:45], as_negatives, features[45:], seed=0, costs=costs,
                                              difficult="ignore")
    assert torch.equal(default, relabelled) and default_costs == relabelled_costs
    ignored, _ = svm_scores(features[:45], labels[:45], features[45:], seed=0, costs=costs, difficult="ignore")
    kept = labels[:45, 0] != 0
    without, _ = svm_scores(features[:45][kept], labels[:45][kept], features[45:], seed=0, costs=costs)
    assert torch.equal(ignored[:, 0], without[:, 0])
    assert not torch.equal(ignored[:, 0], default[:, 0])  # the reading changes the SVM of class 0 ...
    assert torch.equal(ignored[:, 1], default[:, 1])      # ... and not that of a class without difficult images
    with pytest.raises(ValueError, match="difficult must be one of"):
        svm_scores(features[:45], labels[:45], features[45:], seed=0, costs=costs, difficult="positive")


def test_a_linear_eval_stage_planned_before_the_switch_computes_what_its_key_promised(tmp_path, devkit):
    """A stage.json without ``difficult`` or ``average_precision`` (an earlier version planned it, its
    key says so): the SVMs leave the difficult-only images out and top1 is the 11-point mAP, alone;
    its results row names that metric."""
    from results.row import build_row
    from workers.stages.contract import FeaturesMetrics, LinearEvalConfig, StageContext
    from workers.stages.transfer import run_linear_eval
    from workers.stages.paths import FEATURES_FILE
    from workers.training.checkpoints import save_state_dict

    features, labels = _difficult_case()
    full = torch.full((60, len(voc.VOC_CLASSES)), -1)
    full[:, :2] = labels
    cached = tmp_path / "features-x"
    cached.mkdir()
    save_state_dict(cached / FEATURES_FILE, {"train_features": features[:45], "train_labels": full[:45],
                                             "test_features": features[45:], "test_labels": full[45:]})
    (cached / "metrics.json").write_text(FeaturesMetrics(kept=1, total=2, fraction_remaining=0.5, dim=5,
                                                         wall_time_s=0.0).model_dump_json())
    config = {"target": {"name": "voc07", "root": str(devkit)}, "classifier": "svm", "metric": "map", "seed": 0}
    old = run_linear_eval(StageContext(tmp_path / "old", "linear_eval-old", LinearEvalConfig.model_validate(config),
                                       {"features": cached})).metrics
    new = run_linear_eval(StageContext(tmp_path / "new", "linear_eval-new", LinearEvalConfig.model_validate(
        {**config, "difficult": "negative", "average_precision": "benchmark"}), {"features": cached})).metrics
    ignored, _ = svm_scores(features[:45], full[:45], features[45:], seed=0, difficult="ignore")
    as_negatives, _ = svm_scores(features[:45], full[:45], features[45:], seed=0)
    assert "map_11point" not in old and old["top1"] == voc07_mean_average_precision(ignored, full[45:])
    assert new == {**new, **multilabel_metrics(as_negatives, full[45:])}
    cell = {"sweep": "s", "stage_key": "k", "mask_source": "rotnet", "init": "pretrained", "rewind": "0",
            "rewind_iteration": 0, "level": 1, "nominal_fraction": 0.8, "seed": 0, "transfer": "linear"}
    spec = {"dataset": {"name": "digits"}, "arch": {"name": "small_cnn"}}
    old_row = build_row(cell, spec, {**old, "epochs": 0, "wall_time_s": 0.0}, None)
    new_row = build_row(cell, spec, {**new, "epochs": 0, "wall_time_s": 0.0}, None)
    assert (old_row["metric"], old_row["map_11point"], old_row["top1"]) == ("map_11point", old["top1"], old["top1"])
    assert (new_row["metric"], new_row["map_11point"], new_row["top1"]) == ("map", new["map_11point"], new["top1"])


def test_svms_choose_their_cost_by_cross_validation_and_separate_separable_classes():
    generator = torch.Generator().manual_seed(0)
    labels = torch.where(torch.rand(60, 3, generator=generator) > 0.5, 1, -1)
    labels[:, 2] = -1  # no positive: not trained, scores 0
    labels[5, 0] = 0   # difficult only: a negative in the training of class 0
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
    from workers.training.checkpoints import save_state_dict
    from workers.stages.transfer import run_linear_eval
    from workers.stages.paths import FEATURES_FILE

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
    assert transfers["map_11point"].between(0, 1).all()  # the devkit's mAP beside the benchmark's
    assert df.loc[df["transfer"].isna(), "map_11point"].isna().all()
    done = [json.loads(p.read_text()) for p in (tmp_path / "ws").rglob("metrics.json")]
    stage = next(json.loads(p.read_text()) for p in (tmp_path / "ws").rglob("linear_eval-*/stage.json"))
    assert stage["config"]["difficult"] == "negative" and stage["config"]["average_precision"] == "benchmark"
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
    (lambda s: s["transfer"]["linear"].update(classifier="sgd", recipe=QUICK, difficult="ignore"),
     "transfer.linear.difficult", "classifier: svm only"),
    (lambda s: s["transfer"]["linear"].update(difficult="positive"), "transfer.linear.difficult",
     "'negative' or 'ignore'"),
    (lambda s: s["transfer"].update(dataset={"name": "digits"}, linear={"classifier": "svm", "metric": "map",
                                                                        "difficult": "ignore"}),
     "transfer.linear.difficult", "digits has no difficult-only labels"),
])
def test_bad_voc07_settings_exit_2_naming_the_key(devkit, write_sweep, capsys, change, where, what):
    sweep = _sweep(devkit, {"classifier": "svm", "metric": "map"})
    change(sweep)
    assert main(["plan", str(write_sweep(sweep))]) == 2
    err = capsys.readouterr().err
    assert where in err and what in err and "Traceback" not in err


def test_voc07_evaluations_are_stages_of_their_own_and_the_features_stay(devkit):
    """Issue 28 changed what a VOC07 evaluation reports (and how its SVMs train): its linear and
    fine-tuning stages have keys no earlier version made, ``difficult: ignore`` another one, while
    the features (the forward passes) and the chains keep theirs; a digits target is untouched."""
    from orchestrator.planning.planner import plan_sweep, settings_fingerprint
    from orchestrator.spec import validate_spec

    def stages(linear, target=None):
        sweep = _sweep(devkit, linear)
        if target is not None:
            sweep["transfer"]["dataset"] = target
        spec = validate_spec(sweep, "voc.yaml")
        return {stage.kind + (stage.config.get("mode", "") if stage.kind == "finetune" else ""): stage
                for stage in plan_sweep(spec).stages.values()}, settings_fingerprint(spec)

    default, settings = stages({"classifier": "svm", "metric": "map"})
    explicit, explicit_settings = stages({"classifier": "svm", "metric": "map", "difficult": "negative"})
    ignore, ignore_settings = stages({"classifier": "svm", "metric": "map", "difficult": "ignore"})
    assert {kind: s.key for kind, s in default.items()} == {kind: s.key for kind, s in explicit.items()}
    assert settings == explicit_settings != ignore_settings
    assert default["linear_eval"].identity["average_precision"] == "benchmark"
    assert "difficult" not in default["linear_eval"].identity and ignore["linear_eval"].identity["difficult"] == "ignore"
    assert (default["linear_eval"].config["difficult"], ignore["linear_eval"].config["difficult"]) == ("negative",
                                                                                                        "ignore")
    assert default["linear_eval"].key != ignore["linear_eval"].key
    for kind in ("finetunepruned", "finetuneprune_during"):
        assert default[kind].identity["average_precision"] == default[kind].config["average_precision"] == "benchmark"
    for kind in ("dense", "imp", "features"):
        assert default[kind].key == ignore[kind].key and "average_precision" not in default[kind].identity
    assert '"average_precision":"benchmark"' in settings
    digits, digits_settings = stages({"classifier": "svm", "metric": "map"}, {"name": "digits"})
    assert "average_precision" not in digits["linear_eval"].identity and "difficult" not in digits["linear_eval"].config
    assert "average_precision" not in digits_settings

