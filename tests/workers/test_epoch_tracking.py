"""Per-epoch metrics (issue 27): the worker's epochs.jsonl and provenance.json in every training stage's
folder, never artifacts; `tracking: {tensorboard: true}` adds TensorBoard event files that tensorboard's own
reader reads back; tracking is no part of any stage's identity. MLflow against a real server:
tests/integration/test_tracking_mlflow.py."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, TINY, ledger_states

from orchestrator.driver import resume
from orchestrator.planning.planner import plan_sweep, settings_fingerprint
from orchestrator.spec import validate_spec
from workers.stages.epochs import EpochRecorder, read_epochs
from workers.stages.paths import EPOCHS_FILE, PROVENANCE_FILE, TENSORBOARD_DIR, TRACKING_FILE
from workers.stages.provenance import code_digest, code_version, read_provenance

SWEEP = dict(TINY, name="tracked", mask_source=["labels", "random"], init=["winning_ticket", "reinit"],
             pruning={"fractions": [0.8]}, tracking={"tensorboard": True})
TRAINING = ("dense", "imp", "eval")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=900)


def write(path, sweep):
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """The tiny grid (labels and random masks, one fraction, 2 epochs) launched with TensorBoard tracking."""
    base = tmp_path_factory.mktemp("tracked")
    sweep = dict(SWEEP, workspace=str(base / "ws"))
    launch = cli("launch", write(base / "tracked.yaml", sweep), "--no-progress")
    assert launch.returncode == 0, launch.stdout + launch.stderr
    return base, base / "ws", sweep


def training_stages(workspace):
    return {key: row for key, row in ledger_states(workspace).items() if row["kind"] in TRAINING}


def test_every_training_stage_writes_its_epochs(tracked):
    _, workspace, sweep = tracked
    stages = training_stages(workspace)
    assert {row["kind"] for row in stages.values()} == set(TRAINING)
    for key, row in stages.items():
        folder = workspace / "stages" / key
        epochs = read_epochs(folder)
        assert [entry["epoch"] for entry in epochs] == [1, 2], key
        assert [entry["iteration"] for entry in epochs] == [6, 12]  # 1437 digits / batch 256
        assert all(math.isfinite(entry["train_loss"]) and 0 <= entry["train_accuracy"] <= 1 for entry in epochs)
        assert epochs[0]["seconds"] < epochs[1]["seconds"] and epochs[1]["lr"] == sweep["recipes"]["labels"]["lr"]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert epochs[-1]["test_top1"] == metrics["test_top1"] and "test_top1" not in epochs[0]
        # the same numbers the log prints, which the file is not read from
        logged = re.findall(r"epoch (\d)/2: loss ([\d.]+)", (folder / "log.txt").read_text())
        assert [(int(e), float(loss)) for e, loss in logged] == [
            (entry["epoch"], round(entry["train_loss"], 4)) for entry in epochs]


def test_the_new_files_are_no_artifacts(tracked):
    base, workspace, sweep = tracked
    for key in training_stages(workspace):
        folder = workspace / "stages" / key
        listed = json.loads((folder / "DONE.json").read_text())["files"]
        assert {EPOCHS_FILE, PROVENANCE_FILE, TRACKING_FILE, TENSORBOARD_DIR}.isdisjoint(listed)
        assert (folder / TRACKING_FILE).is_file() and (folder / PROVENANCE_FILE).is_file()
    # a damaged or missing epochs file never makes a stage run again
    first = next(iter(training_stages(workspace)))
    (workspace / "stages" / first / EPOCHS_FILE).write_text("{not json\n")
    (workspace / "stages" / next(reversed(training_stages(workspace))) / EPOCHS_FILE).unlink()
    assert resume(workspace, dry_run=True)[0] == []
    assert read_epochs(workspace / "stages" / first) == []


def test_tensorboard_event_files_read_back_by_tensorboard(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, workspace, _ = tracked
    for key in training_stages(workspace):
        folder = workspace / "stages" / key
        epochs = read_epochs(folder)
        if not epochs:  # the test above damaged one
            continue
        events = EventAccumulator(str(folder / TENSORBOARD_DIR))
        events.Reload()
        assert {"train_loss", "train_accuracy", "lr", "seconds", "test_top1"} <= set(events.Tags()["scalars"])
        for metric in ("train_loss", "train_accuracy"):
            scalars = events.Scalars(metric)
            assert [s.step for s in scalars] == [1, 2]
            assert [s.value for s in scalars] == pytest.approx([entry[metric] for entry in epochs], rel=1e-6)
        assert [(s.step, s.value) for s in events.Scalars("test_top1")] == [(2, pytest.approx(epochs[-1]["test_top1"]))]


def test_tracking_is_no_part_of_any_stage_identity(tracked, tmp_path):
    base, workspace, sweep = tracked
    plain = {key: value for key, value in sweep.items() if key != "tracking"}
    with_tracking, without = validate_spec(sweep, "a"), validate_spec(plain, "b")
    assert list(plan_sweep(with_tracking).stages) == list(plan_sweep(without).stages)
    assert settings_fingerprint(with_tracking) == settings_fingerprint(without)
    stage_files = {path: path.read_bytes() for path in (workspace / "stages").glob("*/stage.json")}
    assert all(b"tracking" not in data and b"tensorboard" not in data for data in stage_files.values())
    # the same sweep name without tracking: accepted, nothing reruns, no stage file changes
    attempts = {key: row["attempts"] for key, row in ledger_states(workspace).items()}
    again = cli("launch", write(tmp_path / "plain.yaml", plain), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert {key: row["attempts"] for key, row in ledger_states(workspace).items()} == attempts
    assert {path: path.read_bytes() for path in (workspace / "stages").glob("*/stage.json")} == stage_files


def test_a_stage_run_without_tracking_loses_its_tracking_file(tracked, tmp_path):
    """A sweep relaunched without tracking takes the file away from the stages it runs again."""
    base, workspace, sweep = tracked
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    evaluation = next(key for key, row in training_stages(copy).items() if row["kind"] == "eval")
    folder = copy / "stages" / evaluation
    (folder / "DONE.json").unlink()
    shutil.rmtree(folder / TENSORBOARD_DIR)
    plain = {key: value for key, value in sweep.items() if key != "tracking"}
    done = cli("launch", write(tmp_path / "plain.yaml", dict(plain, workspace=str(copy))), "--no-progress")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (folder / TRACKING_FILE).exists() and not (folder / TENSORBOARD_DIR).exists()
    assert [entry["epoch"] for entry in read_epochs(folder)] == [1, 2]


def test_provenance_names_the_code_packages_and_machine(tracked, tmp_path):
    from importlib import metadata

    _, workspace, _ = tracked
    record = read_provenance(workspace / "stages" / next(iter(training_stages(workspace))))
    assert record["packages"]["torch"] == metadata.version("torch") and record["packages"]["python"]
    assert record["cpu"] and record["cpu"] != "-" and record["cpu_cores"] >= 1 and record["gpus"] == []
    assert record["code"]["digest"] == code_digest(ROOT / "workers")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit; else (an installed copy) none
        assert record["code"]["commit"] == head.stdout.strip()
    # code outside any git checkout (a SLURM job's snapshot) is known by its digest alone
    snapshot = tmp_path / "snapshot" / "workers"
    shutil.copytree(ROOT / "workers", snapshot, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_version(snapshot) == {"commit": None, "modified": None, "digest": code_digest(ROOT / "workers")}


def test_a_resumed_training_replaces_the_epochs_its_checkpoint_lost(tmp_path):
    """Killed after recording epoch 3 but before its checkpoint: the rerun of epoch 3 replaces it, never adds it."""
    (tmp_path / EPOCHS_FILE).write_text("".join(json.dumps({"epoch": e, "train_loss": 1.0 / e}) + "\n"
                                                for e in (1, 2, 3)))
    recorder = EpochRecorder(tmp_path, "eval-x", 0)
    recorder.record({"epoch": 3, "iteration": 30, "train_loss": 0.25, "train_accuracy": None})
    recorder.record({"epoch": 4, "iteration": 40, "train_loss": 0.2})
    recorder.measured(0.9, label_head=True)
    recorder.close()
    assert read_epochs(tmp_path) == [{"epoch": 1, "train_loss": 1.0}, {"epoch": 2, "train_loss": 0.5},
                                     {"epoch": 3, "iteration": 30, "train_loss": 0.25},
                                     {"epoch": 4, "iteration": 40, "train_loss": 0.2, "test_top1": 0.9}]
    assert [p.name for p in tmp_path.iterdir()] == [EPOCHS_FILE]  # no temp file left
