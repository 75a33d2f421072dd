"""Reading never writes: ``status``, ``results`` and ``plan`` work on a workspace the user cannot write
(and on one whose lock a run holds) and leave every byte and mtime of it as it was."""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from in_process_cli import MINI, run_cli, launch_mini

from orchestrator.state.artifact_stamps import SETTLED_S

#: capabilities that let root write where the modes say no: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER.
_OVERRIDING_CAPS = (1, 2, 3)
_PR_CAPBSET_DROP = 24


def _drop_overriding_caps() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _OVERRIDING_CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def run_as_reader(*args) -> subprocess.CompletedProcess:
    """``prunesweep ARGS`` as a process that may not write where the file modes forbid it.

    As root, the process keeps uid 0 (its Python may live under /root) but loses the
    capabilities that override file modes, so a ``chmod -R a-w`` copy is read-only to it as to
    any colleague; as another user the modes hold anyway.
    """
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, preexec_fn=_drop_overriding_caps if os.geteuid() == 0 else None)


def _can_drop_caps() -> str | None:
    if os.geteuid() != 0:
        return None
    probe = subprocess.run([sys.executable, "-c", "open('/proc/self/status').read()"],
                           preexec_fn=_drop_overriding_caps, capture_output=True)
    return None if probe.returncode == 0 else "cannot drop CAP_DAC_OVERRIDE as root here (no CAP_SETPCAP)"


def snapshot(folder: Path, folder_times: bool = True) -> dict:
    """Every path under ``folder`` (and itself): kind, size, mtime in ns and the sha256 of a file's bytes.

    ``folder_times=False`` leaves out the mtimes of folders: in a folder the reader may write,
    SQLite makes and removes a store's -wal/-shm files around every read, which dates the folder
    (the files, their bytes and mtimes are still compared).
    """
    found = {}
    for path in [folder, *sorted(folder.rglob("*"))]:
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() else ""
        mtime = info.st_mtime_ns if folder_times or not path.is_dir() else None
        found[str(path.relative_to(folder))] = (oct(info.st_mode), info.st_size, mtime, digest)
    return found


@pytest.fixture(scope="module")
def done_workspace(tmp_path_factory):
    """A workspace whose mini sweep ran to the end (settled: a status has recorded its stamps)."""
    root = tmp_path_factory.mktemp("readonly")
    sweep = launch_mini(root)
    # artifacts written less than SETTLED_S before a status are hashed but not stamped (racy
    # stamps), so the next status would stamp them: settle only once they are old enough
    time.sleep(SETTLED_S + 0.5)
    outputs = {name: run_cli(*args)[1] for name, args in _reading_commands(root / "ws", sweep).items()}
    return root / "ws", sweep, outputs


def _reading_commands(workspace: Path, sweep: Path) -> dict[str, tuple]:
    return {"status": ("status", workspace), "verify": ("status", workspace, "--verify"),
            "results": ("results", workspace), "pivot": ("results", workspace, "--pivot"),
            "plan": ("plan", sweep)}


@pytest.fixture
def read_only_copy(done_workspace, tmp_path):
    """A ``chmod -R a-w`` copy of the done workspace, its sweep file pointing at it."""
    reason = _can_drop_caps()
    if reason:
        pytest.skip(reason)
    copy = tmp_path / "ro"
    shutil.copytree(done_workspace[0], copy, symlinks=True)
    sweep = tmp_path / "mini.yaml"
    sweep.write_text(yaml.safe_dump({**MINI, "workspace": str(copy)}))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    yield copy, sweep
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def test_reading_commands_work_on_a_read_only_workspace_and_change_nothing(read_only_copy, done_workspace, tmp_path):
    copy, sweep = read_only_copy
    before = snapshot(copy)
    for name, args in _reading_commands(copy, sweep).items():
        done = run_as_reader(*args)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (name, done.stderr)
        expected = done_workspace[2][name].replace(str(done_workspace[0]), str(copy))
        assert done.stdout.replace(str(copy), "WS") == expected.replace(str(copy), "WS"), name
    out = tmp_path / "rows.csv"
    done = run_as_reader("results", copy, "--csv", out)
    assert done.returncode == 0 and out.read_text().count("\n") == 2, done.stderr  # an export goes elsewhere
    assert snapshot(copy) == before


@pytest.mark.parametrize("command", [("resume",), ("resume", "--dry-run"), ("cancel",), ("repair",), ("launch",)])
def test_writing_commands_refuse_a_read_only_workspace_in_one_line(read_only_copy, command):
    copy, sweep = read_only_copy
    before = snapshot(copy)
    args = (command[0], sweep) if command[0] == "launch" else (command[0], copy, *command[1:])
    done = run_as_reader(*args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert ("read-only for you" in done.stderr or "is not writable" in done.stderr) and str(copy) in done.stderr, \
        done.stderr
    assert snapshot(copy) == before


def test_reading_a_settled_workspace_of_the_current_version_changes_no_byte_and_no_mtime(done_workspace):
    workspace, sweep, _ = done_workspace
    before = snapshot(workspace, folder_times=False)
    for args in _reading_commands(workspace, sweep).values():
        assert run_cli(*args)[0] == 0
    assert snapshot(workspace, folder_times=False) == before


def test_while_a_run_holds_the_lock_reading_reconciles_in_memory_only(done_workspace, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(done_workspace[0], copy, symlinks=True)
    from orchestrator.state.ledger import Ledger

    ledger = Ledger(copy)
    key = next(row["key"] for row in ledger.stages() if row["kind"] == "eval")
    ledger.mark_failed(key, "ValueError", "said the ledger")  # the artifacts say done: reconcile corrects it
    ledger.close()
    holder = os.open(copy / ".lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        before = snapshot(copy, folder_times=False)
        code, out, err = run_cli("status", copy)
        assert code == 0 and "cells: 1 of 1 done" in out and "failed stages" not in out, out + err
        assert snapshot(copy, folder_times=False) == before
    finally:
        os.close(holder)
    assert run_cli("status", copy)[0] == 0  # the lock is free: now the correction is written
    ledger = Ledger(copy)
    assert ledger.stages([key])[0]["state"] == "done"
    ledger.close()


def _forget_the_row(workspace: Path) -> None:
    """Delete the results row, as if the stage finished after the last writer ingested (a scheduler ran it)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(workspace / "results.sqlite")) as conn, conn:
        assert conn.execute("DELETE FROM results").rowcount == 1


def test_a_reader_shows_the_rows_of_cells_finished_since_the_last_writer(done_workspace, tmp_path):
    reason = _can_drop_caps()
    if reason:
        pytest.skip(reason)
    copy = tmp_path / "ro"
    shutil.copytree(done_workspace[0], copy, symlinks=True)
    _forget_the_row(copy)
    for path in [copy, *copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    try:
        before = snapshot(copy)
        for name in ("results", "pivot"):
            done = run_as_reader(*_reading_commands(copy, tmp_path / "unused.yaml")[name])
            assert done.returncode == 0, done.stderr
            expected = done_workspace[2][name].replace(str(done_workspace[0]), "WS")
            assert done.stdout.replace(str(copy), "WS") == expected, (name, done.stdout)
        page = tmp_path / "report.html"
        done = run_as_reader("report", copy, "-o", page)
        assert done.returncode == 0 and "1 row from 1 workspace" in done.stdout, done.stdout + done.stderr
        assert snapshot(copy) == before
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    import results

    assert len(results.load(copy)) == 0  # nothing was recorded by the reader


def test_while_a_run_holds_the_lock_results_shows_the_unrecorded_cells_without_writing(done_workspace, tmp_path):
    copy = tmp_path / "ws"
    shutil.copytree(done_workspace[0], copy, symlinks=True)
    _forget_the_row(copy)
    holder = os.open(copy / ".lock", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        before = snapshot(copy, folder_times=False)
        code, out, err = run_cli("results", copy)
        assert code == 0 and out.replace(str(copy), "WS") == done_workspace[2]["results"].replace(
            str(done_workspace[0]), "WS"), out + err
        assert snapshot(copy, folder_times=False) == before
    finally:
        os.close(holder)
    import results

    assert len(results.load(copy)) == 0
    assert run_cli("results", copy)[0] == 0  # the lock is free: now the row is recorded
    assert len(results.load(copy)) == 1
