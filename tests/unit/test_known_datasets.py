"""`plan` before the data exists: the published sizes of the standard datasets stand in for
an absent folder, with a one-line notice; `launch` still refuses until the folder is there."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from orchestrator.planning import gpu_hours
from orchestrator.cli import main
from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import load_spec
from workers.data import known_datasets
from workers.data.known_datasets import KNOWN, known_facts, sizes_when_absent

PAPER = Path(__file__).resolve().parents[2] / "sweeps" / "paper"
SWEEPS = sorted(PAPER.glob("*.yaml"))


def test_the_published_sizes():
    assert (KNOWN["imagenet"].train_size, KNOWN["imagenet"].test_size, KNOWN["imagenet"].num_classes) == \
        (1_281_167, 50_000, 1_000)
    assert (KNOWN["cifar10"].train_size, KNOWN["cifar10"].test_size, KNOWN["cifar10"].num_classes) == \
        (50_000, 10_000, 10)
    assert (KNOWN["places205"].train_size, KNOWN["places205"].test_size, KNOWN["places205"].num_classes) == \
        (2_448_873, 20_500, 205)
    assert (KNOWN["voc07"].train_size, KNOWN["voc07"].test_size, KNOWN["voc07"].num_classes) == (5_011, 4_952, 20)


def test_ten_percent_subsets_follow():
    per_class = known_facts({"name": "imagenet", "root": "x", "subset": {"kind": "images_per_class",
                                                                          "fraction": 0.1, "seed": 0}})
    assert per_class["train_size"] == 128_117 and per_class["num_classes"] == 1_000
    classes = known_facts({"name": "imagenet", "root": "x", "subset": {"kind": "classes", "fraction": 0.1}})
    assert classes["train_size"] == round(1_281_167 * 100 / 1_000)
    assert known_facts({"name": "cifar10", "root": "x"})["test_size"] == 10_000


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_plan_works_on_every_paper_sweep_without_its_data(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no data/ here
    assert main(["plan", str(path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith(f"note: data folder missing: {tmp_path}/data/")
    assert lines[0].endswith(": planned from the published sizes; `launch` needs the folder")
    assert sum(line.startswith("note:") for line in lines) == 1
    for start in ("stages: ", "trainings: ", "epochs: ", "GPU-hours: "):
        assert any(line.startswith(start) for line in lines), (start, out)
    assert not err
    assert not (tmp_path / "runs").exists()  # plan writes nothing


def test_launch_still_refuses_without_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", str(PAPER / "cifar10_resnet18.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"dataset.root: {tmp_path}/data/cifar10: no such folder" in err
    assert not (tmp_path / "runs").exists()


def test_a_malformed_folder_is_still_an_error_in_plan(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "cifar10").mkdir(parents=True)  # there, but without cifar-10-batches-py/
    assert main(["plan", str(PAPER / "cifar10_resnet18.yaml")]) == 2
    assert "cifar-10-batches-py: no such folder" in capsys.readouterr().err


def test_outside_the_context_nothing_changes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="no such folder"):
        load_spec(PAPER / "cifar10_resnet18.yaml")


def test_the_sizes_drive_steps_and_gpu_hours(tmp_path, monkeypatch):
    """Iterations per epoch and the GPU-hours estimate come from the published sizes."""
    monkeypatch.chdir(tmp_path)
    with sizes_when_absent() as absent:
        spec = load_spec(PAPER / "cifar10_resnet18.yaml", ["seeds=[0]"])
        assert spec.iterations_per_epoch("labels") == math.ceil(50_000 / 512)
        plan = plan_sweep(spec)
        table = [{"arch": "resnet18", "dataset": "cifar10", "device": "X", "samples_per_s": 1000.0}]
        estimate = gpu_hours.estimate(spec, plan, "X", table)
    assert absent == {str(tmp_path / "data" / "cifar10"): "cifar10"}
    images = sum(stage.epochs * 50_000 * gpu_hours.VIEWS.get(stage.config.get("task", "labels"), 1)
                 for stage in plan.stages.values() if stage.kind not in gpu_hours.NOT_COUNTED and stage.epochs)
    assert estimate.hours == pytest.approx(images / 1000.0 / 3600)


def test_describe_names_the_sizes():
    assert known_datasets.describe("voc07") == "voc07: 5,011 train / 4,952 val images, 20 classes"
