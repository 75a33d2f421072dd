"""Versioned stores: a workspace made before the ledger and the results table carried a
schema version opens, reads without being written, and is upgraded in place by the first
writing command; a new results column takes one definition and a migration of each store."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT

import results
from orchestrator.cli import main
from orchestrator.state.ledger import Ledger
from workers.stages.paths import LEDGER_FILE
from orchestrator.state.ledger import MIGRATIONS as LEDGER_MIGRATIONS
from results.migrations import MIGRATIONS as RESULTS_MIGRATIONS
from results.table import DB_FILE
from results.versioned_sqlite import StoreVersionError, open_for_writing, schema_version, sql

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OLD = FIXTURES / "workspace_v1"
#: the grid cells of the old workspace (5 of the pruning grid, a linear and a fine-tuning transfer).
_CELLS = 7


@pytest.fixture
def old(tmp_path):
    """A copy of the committed workspace of the unversioned code (never the fixture itself)."""
    return Path(shutil.copytree(OLD, tmp_path / "workspace_v1"))


def _version(path: Path) -> int:
    """The store's schema version (``mode=rw`` creates nothing and, closed, leaves no -wal/-shm)."""
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True)) as conn:
        return schema_version(conn)


def _files(workspace: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workspace)): p.read_bytes() for p in sorted(workspace.rglob("*")) if p.is_file()}


def _done_times(workspace: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (workspace / "stages").glob("*/DONE.json")}


def _old_rows(workspace: Path) -> dict[str, tuple]:
    """stage_key -> (init, top1) straight from a results table of any version."""
    with closing(sqlite3.connect(f"{(workspace / DB_FILE).resolve().as_uri()}?mode=rw", uri=True)) as conn:
        return {key: (init, top1) for key, init, top1 in conn.execute("SELECT stage_key, init, top1 FROM results")}


def test_the_fixture_is_a_finished_workspace_of_the_unversioned_code(old):
    assert _version(old / LEDGER_FILE) == 0 and _version(old / DB_FILE) == 0
    inits = {init for init, _ in _old_rows(old).values()}
    assert {"linear", "finetune"} <= inits  # transfer rows overloaded init then
    assert len(_done_times(old)) == 12


def test_reading_commands_read_an_old_workspace_and_leave_it_byte_identical(old, capsys):
    before = _files(old)
    assert main(["status", str(old)]) == 0
    out = capsys.readouterr().out
    assert "cells: 7 of 7 done, 0 missing" in out and "to be rerun" not in out and "failed stages" not in out
    assert main(["results", str(old), "--pivot"]) == 0
    pivot = capsys.readouterr().out
    assert "rotnet / linear" in pivot and "rotnet / finetune" in pivot and "labels / winning_ticket" in pivot
    assert main(["results", str(old), "--where", "transfer=linear"]) == 0
    linear = capsys.readouterr().out
    assert "pretrained" in linear and "winning_ticket" not in linear
    frame = results.load(old)  # the old table, seen through the migrations
    assert len(frame) == _CELLS and set(frame["init"]) == {"winning_ticket", "reinit", "pretrained"}
    assert set(frame["transfer"].dropna()) == {"linear", "finetune"}
    ledger = Ledger(old, reading=True)
    try:
        assert not ledger.writes_persist and ledger.version == len(LEDGER_MIGRATIONS)
        assert {(c["init"], c["transfer"]) for c in ledger.cells() if c["mask_source"] == "rotnet"} == {
            ("winning_ticket", None), ("reinit", None), ("pretrained", "linear"), ("pretrained", "finetune")}
    finally:
        ledger.close()
    assert _files(old) == before  # not a byte written, no file added (no -wal/-shm left)
    assert _version(old / LEDGER_FILE) == 0 and _version(old / DB_FILE) == 0


def test_a_writing_command_reruns_nothing_and_upgrades_both_stores_in_place(old, capsys):
    done_before, rows_before = _done_times(old), _old_rows(old)
    assert main(["resume", str(old), "--dry-run"]) == 0
    assert "would run 0 stage(s)" in capsys.readouterr().out
    assert _version(old / LEDGER_FILE) == len(LEDGER_MIGRATIONS)
    assert _version(old / DB_FILE) == len(RESULTS_MIGRATIONS)
    assert main(["resume", str(old), "--no-progress"]) == 0
    assert "ran 0 stage(s)" in capsys.readouterr().out
    assert _done_times(old) == done_before

    frame = results.load(old)
    assert len(frame) == _CELLS
    for row in frame.itertuples():
        old_init, old_top1 = rows_before[row.stage_key]
        assert row.top1 == old_top1
        if old_init in ("linear", "finetune"):
            assert (row.init, row.transfer) == ("pretrained", old_init)
        else:
            assert row.init == old_init and pd.isna(row.transfer)
    assert set(zip(frame["init"], frame["transfer"].fillna("-"), strict=True)) == {
        ("winning_ticket", "-"), ("reinit", "-"), ("pretrained", "linear"), ("pretrained", "finetune")}
    # reading the upgraded workspace still works, and writes nothing
    before = _files(old)
    assert main(["status", str(old)]) == 0 and main(["results", str(old), "--pivot"]) == 0
    assert "cells: 7 of 7 done" in capsys.readouterr().out
    assert _files(old) == before


def test_relaunching_the_old_sweep_reruns_nothing_and_records_no_cell_twice(old, capsys):
    done_before = _done_times(old)
    sweep = str(FIXTURES / "workspace_v1.yaml")
    assert main(["launch", sweep, f"workspace={old}", "--no-progress"]) == 0
    assert "ran 0 stage(s)" in capsys.readouterr().out
    assert _done_times(old) == done_before
    ledger = Ledger(old)
    try:
        cells = ledger.cells()
    finally:
        ledger.close()
    assert len(cells) == _CELLS  # the planner's new transfer cells replaced the migrated ones
    assert {(c["init"], c["transfer"]) for c in cells if c["transfer"]} == {("pretrained", "linear"),
                                                                          ("pretrained", "finetune")}
    assert len(results.load(old)) == _CELLS


@pytest.mark.parametrize("store", [LEDGER_FILE, DB_FILE])
def test_a_store_of_a_newer_prunesweep_is_refused_naming_the_file(old, capsys, store):
    with closing(sqlite3.connect(old / store)) as conn:
        conn.execute("PRAGMA user_version = 99")
    for command in (["status", str(old)], ["results", str(old)], ["resume", str(old), "--dry-run"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert f"{old / store}: schema version 99 was made by a newer prunesweep" in err and err.count("\n") == 1
    if store == DB_FILE:
        with pytest.raises(StoreVersionError, match="newer prunesweep"):
            results.load(old)


def test_a_failing_migration_leaves_the_store_as_it_was(tmp_path):
    path = tmp_path / "store.sqlite"
    steps = [sql("CREATE TABLE t (a TEXT)"), sql("INSERT INTO t VALUES ('x')", "ALTER TABLE missing ADD COLUMN b")]
    with pytest.raises(sqlite3.OperationalError):
        open_for_writing(path, steps)
    with closing(sqlite3.connect(path)) as conn:
        assert schema_version(conn) == 0
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []  # the first step was rolled back too
    open_for_writing(path, steps[:1]).close()
    with closing(sqlite3.connect(path)) as conn:
        assert schema_version(conn) == 1


_ADD_COLUMN = r'''
import sqlite3, sys
from pathlib import Path
import results
from results import central_db
from results.row import COLUMNS

workspace = Path(sys.argv[1])
assert COLUMNS[-1] == "device" and results.__file__.startswith(sys.argv[2]), results.__file__
old = results.load(workspace)                           # read through the migrations, nothing written
assert len(old) == 7 and old["device"].isna().all()
assert sqlite3.connect(workspace / "results.sqlite").execute("PRAGMA user_version").fetchone()[0] == 0
row = {c: v for c, v in old.iloc[0].items() if c != "recorded_at"}
assert results.record(workspace, [{**row, "stage_key": "eval-new", "device": "cuda"}]) == 1
new = results.load(workspace)
assert len(new) == 8 and new["device"].tolist()[-1] == "cuda" and new["device"].isna().sum() == 7
assert set(new["transfer"].dropna()) == {"linear", "finetune"}
url = "sqlite:///" + str(workspace.parent / "central.sqlite")
assert central_db.push(workspace, url) == 8              # the central table: created, then given the column
assert central_db.load(url)["device"].tolist() == new["device"].tolist()
print("version", sqlite3.connect(workspace / "results.sqlite").execute("PRAGMA user_version").fetchone()[0],
      central_db.schema_version(url))
'''


def _append_to_tuple(path: Path, anchor: str, line: str) -> None:
    # after the last line of the sequence that starts at ``anchor`` (up to its closing bracket at column 0)
    text = path.read_text()
    start = text.index(anchor)
    end = min(i for i in (text.find("\n)", start), text.find("\n]", start)) if i >= 0)
    path.write_text(text[:end] + "\n" + line + text[end:])


def test_a_new_results_column_is_one_definition_plus_two_migrations(old, tmp_path):
    """Copy the results package, make exactly the edits of docs/extending/results-column.md to the
    results package (the definition, the workspace's migration, the central database's migration),
    and use the copy on the old workspace: it reads, writes and upgrades the existing table, and
    pushes the rows to a central database of its schema."""
    from results.central_migrations import CENTRAL_MIGRATIONS

    package = tmp_path / "pkg"
    shutil.copytree(ROOT / "results", package / "results", ignore=shutil.ignore_patterns("__pycache__"))
    results_dir = package / "results"
    _append_to_tuple(results_dir / "row.py", "ROW: tuple[Column, ...] = (", '    Column("device", "TEXT", optional=True),')
    _append_to_tuple(results_dir / "migrations.py", "MIGRATIONS: tuple[Migration, ...] = (",
                     '    sql("ALTER TABLE results ADD COLUMN device TEXT"),')
    _append_to_tuple(results_dir / "central_migrations.py", "CENTRAL_MIGRATIONS: list[",
                     '    add_column("device", "TEXT"),')

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package), str(ROOT)]))
    run = subprocess.run([sys.executable, "-c", _ADD_COLUMN, str(old), str(package)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == ["version", str(len(RESULTS_MIGRATIONS) + 1), str(len(CENTRAL_MIGRATIONS) + 1)]
    # this prunesweep, one migration behind, refuses the upgraded table rather than misreading it
    newer = len(RESULTS_MIGRATIONS) + 1
    with pytest.raises(StoreVersionError, match=f"{old / DB_FILE}: schema version {newer} was made by a newer"):
        results.load(old)


def _version_2_store(workspace: Path, rows: list[dict]) -> None:
    """A results table as version 2 left it (no map_11point), holding ``rows``."""
    from conftest import results_row

    workspace.mkdir(parents=True, exist_ok=True)
    with closing(open_for_writing(workspace / DB_FILE, RESULTS_MIGRATIONS[:2])) as conn, conn:
        for overrides in rows:
            row = {**results_row(**overrides), "recorded_at": "2024-01-01T00:00:00"}
            conn.execute(f"INSERT INTO results ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                         tuple(row.values()))


def test_voc07_rows_of_earlier_versions_say_they_hold_the_11_point_map(tmp_path):
    """Step 3: top1 of a VOC07 evaluation is the benchmark's mAP from now on; a row recorded before
    held the devkit's 11-point mAP there (metric map) and is named for it, read or upgraded."""
    workspace = tmp_path / "ws"
    transfer = {"init": "pretrained", "transfer": "linear", "metric": "map"}
    _version_2_store(workspace, [{**transfer, "eval_dataset": "voc07", "top1": 0.81, "seed": 0},
                                 {**transfer, "eval_dataset": "places205", "top1": 0.4, "seed": 1},
                                 {"top1": 0.9, "seed": 2}])
    expected = {0: ("map_11point", 0.81, 0.81), 1: ("map", 0.4, None), 2: (None, 0.9, None)}

    def seen(frame: pd.DataFrame) -> dict:
        return {int(r.seed): (None if pd.isna(r.metric) else r.metric, r.top1,
                              None if pd.isna(r.map_11point) else r.map_11point) for r in frame.itertuples()}

    assert seen(results.load(workspace)) == expected  # read through the migrations: nothing written
    assert _version(workspace / DB_FILE) == 2
    from conftest import results_row
    new = {**results_row(**transfer, seed=3), "eval_dataset": "voc07", "top1": 0.85, "map_11point": 0.82}
    assert results.record(workspace, [new]) == 1
    assert _version(workspace / DB_FILE) == len(RESULTS_MIGRATIONS)
    assert seen(results.load(workspace)) == {**expected, 3: ("map", 0.85, 0.82)}
