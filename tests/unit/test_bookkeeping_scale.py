"""Bookkeeping whose cost follows what changed, not the workspace (issue 16): corrections
committed in batches, stamps read in one query, a done stage checked without reading its
manifest, one finished stage's results row ingested by key and equal to the bulk path's."""
from __future__ import annotations

import json
import os
import sqlite3
from contextlib import closing

import yaml
from conftest import ROOT

import orchestrator.state.artifact_stamps as artifact_stamps
import orchestrator.state.ledger as ledger_module
from orchestrator.state.ledger import Ledger
from orchestrator.planning.planner import plan_sweep, settings_fingerprint
from orchestrator.state.reconcile import IngestSession, ingest_results, reconcile
from orchestrator.spec import validate_spec
from orchestrator.planning.stage_identity import Stage
from orchestrator.state.workspace import materialise
from workers.stages.paths import stage_dir
from workers.stages.artifacts import write_done


def _finish(workspace, key, metrics=None):
    folder = stage_dir(workspace, key)
    (folder / "final.pt").write_bytes(key.encode() * 10)
    metrics = metrics or {"fraction_remaining": 0.5, "top1": 0.75, "epochs": 1, "wall_time_s": 2.0,
                          "zero_fraction": 0.01}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    write_done(folder, ["final.pt", "metrics.json"], metrics)
    for path in folder.iterdir():  # as if finished a minute ago: the stamps are kept
        info = path.stat()
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns - 60 * 10**9))


def _traced(ledger):
    statements: list[str] = []
    ledger.connection.set_trace_callback(statements.append)
    return statements


def _finished_outside_the_driver(tmp_path, n=30):
    stages = [Stage("dense", {"seed": i}, {"seed": i}, label=f"dense {i}", epochs=1) for i in range(n)]
    materialise(tmp_path, stages)
    ledger = Ledger(tmp_path)
    ledger.register("s", "s.yaml", "{}", {}, stages, [])
    for stage in stages:
        _finish(tmp_path, stage.key)
    return ledger, stages


def test_stages_finished_outside_the_driver_are_recorded_in_one_transaction(tmp_path):
    ledger, stages = _finished_outside_the_driver(tmp_path)
    statements = _traced(ledger)
    assert len(reconcile(tmp_path, ledger)) == len(stages)
    assert statements.count("BEGIN IMMEDIATE") == 1  # 30 states and 30 stamps: one commit
    assert not [s for s in statements if "FROM verified WHERE key" in s]  # the stamps were read in one query
    assert {row["state"] for row in ledger.stages()} == {"done"}
    assert all(ledger.verified_stamps(stage.key) for stage in stages)


def test_batches_are_bounded_so_no_write_lock_is_held_for_long(tmp_path, monkeypatch):
    ledger, stages = _finished_outside_the_driver(tmp_path)
    monkeypatch.setattr(ledger_module, "BATCH_ROWS", 10)
    statements = _traced(ledger)
    reconcile(tmp_path, ledger)
    assert statements.count("BEGIN IMMEDIATE") == 6  # 60 writes, 10 at a time
    assert {row["state"] for row in ledger.stages()} == {"done"}


def test_a_stamped_stage_is_checked_without_reading_its_manifest(tmp_path, monkeypatch):
    ledger, stages = _finished_outside_the_driver(tmp_path, 3)
    reconcile(tmp_path, ledger)

    def unread(*args, **kwargs):
        raise AssertionError("the manifest was read")

    monkeypatch.setattr(artifact_stamps, "inspect_done", unread)
    assert len(reconcile(tmp_path, ledger)) == 3
    os.utime(stage_dir(tmp_path, stages[0].key) / "final.pt")  # a changed stamp is hashed again
    monkeypatch.undo()
    assert len(reconcile(tmp_path, ledger)) == 3


def _demo_workspace(workspace):
    raw = yaml.safe_load((ROOT / "sweeps" / "digits.yaml").read_text())
    raw.update(workspace=str(workspace), seeds=[0])
    spec = validate_spec(raw, "test")
    plan = plan_sweep(spec)
    stages = list(plan.stages.values())
    workspace.mkdir()
    materialise(workspace, stages)
    ledger = Ledger(workspace)
    ledger.register(spec.name, "test", settings_fingerprint(spec), spec.model_dump(), stages, plan.cells)
    for i, stage in enumerate(stages):
        _finish(workspace, stage.key, {"fraction_remaining": 1 / (1 + i), "top1": i / 100, "epochs": 1,
                                       "wall_time_s": float(i), "zero_fraction": i / 1000})
    return ledger, stages


def _rows(workspace):
    with closing(sqlite3.connect(workspace / "results.sqlite")) as conn:
        conn.row_factory = sqlite3.Row
        return sorted(json.dumps({k: row[k] for k in row.keys() if k != "recorded_at"}, sort_keys=True)
                      for row in conn.execute("SELECT * FROM results"))


def test_one_finished_stage_is_ingested_by_key_with_the_rows_of_the_bulk_path(tmp_path):
    one_by_one, stages = _demo_workspace(tmp_path / "a")
    bulk, _ = _demo_workspace(tmp_path / "b")
    statements = _traced(one_by_one)
    session = IngestSession(tmp_path / "a")
    try:
        added = sum(ingest_results(tmp_path / "a", one_by_one, {stage.key}, session) for stage in stages)
    finally:
        session.close()
    whole_table = [s for s in statements if ("FROM cells" in s or "FROM deps" in s) and "WHERE" not in s]
    assert whole_table == []  # cells and dependencies read by key only (the sweeps table has a row per sweep)
    assert added == ingest_results(tmp_path / "b", bulk, [stage.key for stage in stages]) == 25
    assert _rows(tmp_path / "a") == _rows(tmp_path / "b")
    assert ingest_results(tmp_path / "a", one_by_one, {stages[-1].key}) == 0  # recorded once
