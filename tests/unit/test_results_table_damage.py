"""A results table damaged where its header cannot show it (a value of the wrong type in a column),
and several workspaces read at once when one of them is refused: one line naming the file, exit 2,
and reading leaves no file behind (issue 25)."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from conftest import ROOT
from in_process_cli import run_cli

from results.table import DB_FILE

OLD = ROOT / "tests" / "fixtures" / "workspace_v1"


@pytest.fixture
def workspace(tmp_path):
    """A finished workspace (a copy of the committed one), its stores brought to the current version."""
    copy = Path(shutil.copytree(OLD, tmp_path / "ws"))
    code, out, err = run_cli("resume", copy, "--dry-run")  # a writer: upgrades the stores in place
    assert code == 0, out + err
    return copy


def _set(workspace: Path, column: str, value) -> None:
    with closing(sqlite3.connect(f"{(workspace / DB_FILE).resolve().as_uri()}?mode=rw", uri=True)) as conn, conn:
        conn.execute(f"UPDATE results SET {column} = ? WHERE rowid = (SELECT min(rowid) FROM results)", (value,))


def _one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("column, value", [("measured_fraction", "abc"), ("top1", b"\x00\x01"), ("level", 2.5),
                                           ("nominal_fraction", "n/a")])
def test_a_value_of_the_wrong_type_is_damage_named_in_one_line_and_repair_mends_it(workspace, tmp_path, column,
                                                                                      value):
    code, pivot, err = run_cli("results", workspace, "--pivot")
    assert code == 0, err
    _set(workspace, column, value)
    for args in (("results", workspace, "--pivot"), ("results", workspace),
                 ("report", workspace, "-o", tmp_path / "page.html")):
        code, out, err = run_cli(*args)
        _one_line(code, err, f"{workspace / DB_FILE}: ", f"column '{column}' holds", "prunesweep repair")
    assert not (tmp_path / "page.html").exists()
    code, out, err = run_cli("repair", workspace)  # the row is removed and recorded again from its stage
    assert code == 0 and "held a value their column does not take" in out, out + err
    code, again, err = run_cli("results", workspace, "--pivot")
    assert code == 0 and again == pivot, err


def test_a_command_that_reads_every_column_names_any_of_them(workspace, tmp_path):
    _set(workspace, "seed", "x")
    code, out, err = run_cli("results", workspace, "--csv", tmp_path / "rows.csv")
    _one_line(code, err, f"{workspace / DB_FILE}: column 'seed' holds 'x', not a INTEGER value",
              f"prunesweep repair {workspace}")
    assert not (tmp_path / "rows.csv").exists()


def _prunesweep(*args) -> subprocess.CompletedProcess:
    """The real ``prunesweep`` process (``cli.console``: a reading command ends with ``os._exit``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def _newer(workspace: Path, store: str) -> None:
    with closing(sqlite3.connect(workspace / store)) as conn:
        conn.execute("PRAGMA user_version = 99")


@pytest.mark.parametrize("store, stages", [("results.sqlite", True), ("ledger.sqlite", True),
                                           ("results.sqlite", False)],
                         ids=["newer-results", "newer-ledger", "newer-results-no-stage-done"])
def test_several_workspaces_one_of_a_newer_prunesweep_refused_and_the_good_one_left_as_it_was(workspace, tmp_path,
                                                                                             store, stages):
    bad = Path(shutil.copytree(workspace, tmp_path / "bad"))
    if not stages:  # nothing to reconcile there: the newer table is first met while reading the rows
        shutil.rmtree(bad / "stages")
    _newer(bad, store)
    _prunesweep("results", workspace)  # settles what a first reading records
    before = sorted(os.listdir(workspace))
    for args in (("results", workspace, bad, "--pivot"), ("report", workspace, bad, "-o", tmp_path / "r.html")):
        done = _prunesweep(*args)
        _one_line(done.returncode, done.stderr, f"{bad / store}: schema version 99 was made by a newer prunesweep")
        assert sorted(os.listdir(workspace)) == before, args


def test_a_store_left_open_is_closed_before_a_reading_command_ends_without_teardown(workspace):
    """What ``cli.console`` does before ``os._exit``: a connection some code forgot is closed, and its
    store's -wal/-shm files go with it."""
    code = f"""
import os
from pathlib import Path
from results.migrations import MIGRATIONS
from results import versioned_sqlite
forgotten = versioned_sqlite.open_for_reading(Path({str(workspace / DB_FILE)!r}), MIGRATIONS)
forgotten.execute("SELECT count(*) FROM results").fetchall()
assert os.path.exists({str(workspace / DB_FILE) + "-wal"!r})
versioned_sqlite.close_all()
os._exit(0)
"""
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(name for name in os.listdir(workspace) if name.startswith(DB_FILE)) == [DB_FILE]
