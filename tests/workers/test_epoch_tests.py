"""``eval_every`` in a recipe (issue 27): the test accuracy after every N-th epoch in ``epochs.jsonl`` (and so the
trackers and the report's per-epoch curves), measured without changing what the training does; a recipe
without it keeps every stage key and stage file as they were."""
from __future__ import annotations

import copy
import json

import pytest
from conftest import TINY, ledger_states
from test_epoch_tracking import cli, write

from orchestrator.planning.planner import plan_sweep
from orchestrator.spec import validate_spec
from results.report_provenance import epoch_curves
from workers.stages.epochs import read_epochs

SWEEP = dict(TINY, name="measured", mask_source=["labels", "rotnet"], init=["winning_ticket"],
             pruning={"fractions": [0.8]},
             recipes={"labels": dict(TINY["recipes"]["labels"], epochs=3),
                      "rotnet": dict(TINY["recipes"]["rotnet"], epochs=3)})


def with_eval_every(sweep, every):
    sweep = copy.deepcopy(sweep)
    for recipe in sweep["recipes"].values():
        recipe["eval_every"] = every
    return sweep


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """The same small grid twice: every recipe with eval_every 1, and without it."""
    base = tmp_path_factory.mktemp("eval_every")
    workspaces = {}
    for name, sweep in (("every", with_eval_every(SWEEP, 1)), ("plain", SWEEP)):
        sweep = dict(sweep, workspace=str(base / name))
        done = cli("launch", write(base / f"{name}.yaml", sweep), "--no-progress")
        assert done.returncode == 0, done.stdout + done.stderr
        workspaces[name] = base / name
    return workspaces


def test_each_epoch_has_its_test_accuracy(launched):
    trained = {row["kind"] for row in ledger_states(launched["every"]).values()}
    assert {"dense", "imp", "eval"} <= trained
    seen = set()
    for key, row in ledger_states(launched["every"]).items():
        entries = read_epochs(launched["every"] / "stages" / key)
        if row["kind"] not in ("dense", "imp", "eval"):
            continue
        metrics = json.loads((launched["every"] / "stages" / key / "metrics.json").read_text())
        name = "test_top1" if "test_top1" in metrics else "test_accuracy"
        seen.add(name)
        assert [entry["epoch"] for entry in entries] == [1, 2, 3], key
        assert all(0.0 <= entry[name] <= 1.0 for entry in entries), (key, entries)
        # the last epoch's line holds what the stage measured at its end
        assert entries[-1][name] == pytest.approx(metrics.get("test_top1", metrics.get("task_accuracy")))
    assert seen == {"test_top1", "test_accuracy"}  # labels heads and RotNet's own accuracy


def test_measuring_changes_nothing_the_training_does(launched):
    every, plain = (ledger_states(launched[name]) for name in ("every", "plain"))
    assert len(every) == len(plain)
    for name, states in (("every", every), ("plain", plain)):
        assert all(row["state"] == "done" for row in states.values()), name

    def outcomes(name, states):
        result = {}
        for key in states:
            folder = launched[name] / "stages" / key
            entries = read_epochs(folder)
            metrics = json.loads((folder / "metrics.json").read_text())
            result[json.loads((folder / "stage.json").read_text())["label"]] = (
                [(e["epoch"], e["train_loss"], e["train_accuracy"]) for e in entries],
                {k: v for k, v in metrics.items() if k not in ("wall_time_s", "seconds")})
        return result

    assert outcomes("every", every) == outcomes("plain", plain)
    plain_entries = [read_epochs(launched["plain"] / "stages" / key) for key in plain]
    # without eval_every only the last epoch has a test accuracy, as before
    assert all("test_top1" not in e and "test_accuracy" not in e for entries in plain_entries for e in entries[:-1])


def test_the_report_draws_every_measured_epoch(launched):
    class State:
        name = "every"
        epoch_totals: dict = {}
        epochs = [{"kind": row["kind"], "series": row["kind"],
                   "entries": read_epochs(launched["every"] / "stages" / key)}
                  for key, row in ledger_states(launched["every"]).items() if row["kind"] == "dense"]

    figures = epoch_curves([State()])
    runs = [run for figure in figures for series in figure["series"] for run in series["stages"]]
    assert runs and all(run["test_epoch"] == [1, 2, 3] and len(run["test"]) == 3 for run in runs)


def test_a_recipe_without_it_keeps_every_stage_key(tmp_path):
    plain = plan_sweep(validate_spec(SWEEP, "a"))
    assert list(plan_sweep(validate_spec(with_eval_every(SWEEP, 0), "b")).stages) == list(plain.stages)
    assert all("eval_every" not in json.dumps(stage.config) for stage in plain.stages.values())
    measured = plan_sweep(validate_spec(with_eval_every(SWEEP, 2), "c"))
    assert set(measured.stages).isdisjoint(plain.stages)  # every stage trains (or depends on) a recipe
