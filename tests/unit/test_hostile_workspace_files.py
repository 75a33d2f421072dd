"""A colleague who can write into a shared workspace plants links, FIFOs and damage (issue 25):
nothing outside the workspace is read into output or written, nothing hangs, no quarantined
file is overwritten, and what cannot be done is one line with its exit code."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from in_process_cli import MINI, run_cli, launch_mini

from workers.stages.paths import DONE_FILE, LOG_FILE, STAGE_FILE

SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- not for the report"


def run_process(*args, timeout=120):
    """``prunesweep ARGS`` as a separate process, killed (and the test failed) if it outlives ``timeout``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "orchestrator", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def done_workspace(tmp_path_factory):
    """A workspace whose mini sweep ran to the end."""
    root = tmp_path_factory.mktemp("hostile")
    sweep = launch_mini(root)
    return root / "ws"


@pytest.fixture
def workspace(done_workspace, tmp_path):
    """A fresh copy of the done workspace, and a secret file outside it."""
    copy = tmp_path / "ws"
    shutil.copytree(done_workspace, copy, symlinks=True)
    (tmp_path / "id_rsa").write_text(SECRET + "\n")
    return copy


def _stage(workspace: Path, kind: str) -> Path:
    return next((workspace / "stages").glob(f"{kind}-*"))


def _set_stage(workspace: Path, key: str, **columns) -> None:
    with sqlite3.connect(workspace / "ledger.sqlite") as conn:
        conn.execute(f"UPDATE stages SET {', '.join(f'{name} = ?' for name in columns)} WHERE key = ?",
                     (*columns.values(), key))
    conn.close()


def _fail_with_linked_log(workspace: Path) -> Path:
    """The evaluation stage, made a failed one (no manifest) whose log.txt links to the secret."""
    folder = _stage(workspace, "eval")
    (folder / DONE_FILE).unlink()
    (folder / LOG_FILE).unlink(missing_ok=True)
    (folder / LOG_FILE).symlink_to(workspace.parent / "id_rsa")
    return folder


# ------------------------------------------------------------------ (a) a linked log.txt


def test_report_does_not_copy_a_linked_log_into_the_page(workspace, tmp_path):
    folder = _fail_with_linked_log(workspace)
    _set_stage(workspace, folder.name, state="failed", error_class="RuntimeError", error_message="boom")
    code, out, err = run_cli("report", workspace, "-o", tmp_path / "r.html")
    assert code == 0, out + err
    page = (tmp_path / "r.html").read_text()
    assert SECRET not in page and SECRET not in out + err
    assert "is a symbolic link" in page, page[-3000:]


def test_status_does_not_print_a_linked_log(workspace, tmp_path, monkeypatch):
    """A SLURM job that ended without artifacts: status reads the stage's log tail into its reason."""
    folder = _fail_with_linked_log(workspace)
    _set_stage(workspace, folder.name, state="running", backend="slurm", job_id="4242")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sacct").write_text("#!/bin/sh\necho '4242|COMPLETED|None||'\n")
    for name in ("squeue", "sacct"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, out, err = run_cli("status", workspace)
    assert code == 0, out + err
    assert "job 4242 ended COMPLETED" in out, out
    assert SECRET not in out + err
    assert "is a symbolic link" in out, out


# ------------------------------------------------------------------ (b) a linked quarantine folder


def test_repair_refuses_a_linked_quarantine_and_writes_nothing_outside(workspace, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (workspace / "quarantine").symlink_to(elsewhere)
    (workspace / "ledger.sqlite").write_bytes(b"junk" * 100)
    code, out, err = run_cli("repair", workspace)
    assert code == 2, out + err
    assert len(err.strip().splitlines()) == 1 and str(workspace / "quarantine") in err, err
    assert "symbolic link" in err and "Traceback" not in err, err
    assert list(elsewhere.iterdir()) == []
    assert (workspace / "ledger.sqlite").read_bytes() == b"junk" * 100  # nothing was moved


def test_repair_refuses_a_linked_stages_folder_and_touches_nothing_it_points_to(workspace, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(workspace / "stages", elsewhere)
    (workspace / "stages").symlink_to(elsewhere)
    stage = next(elsewhere.glob("dense-*"))
    (stage / DONE_FILE).write_text("{not json")
    before = sorted(path.name for path in stage.iterdir())
    code, out, err = run_cli("repair", workspace)
    assert code == 2, out + err
    assert str(workspace / "stages") in err and "symbolic link" in err and len(err.strip().splitlines()) == 1, err
    assert sorted(path.name for path in stage.iterdir()) == before


# ------------------------------------------------------------------ (c) a FIFO where a record should be


@pytest.mark.parametrize("name", [STAGE_FILE, DONE_FILE])
def test_a_fifo_in_a_stage_folder_does_not_hang_repair(workspace, name):
    folder = _stage(workspace, "dense")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    done = run_process("repair", workspace, timeout=120)  # before the fix: blocked forever, holding the lock
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"moved stages/{folder.name}/{name} to quarantine/" in done.stdout, done.stdout
    assert (folder / STAGE_FILE).is_file()  # written again from the sweep
    status = run_process("status", workspace, timeout=120)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr


# ------------------------------------------------------------------ (d) two repairs in one second


def test_two_repairs_in_the_same_second_keep_both_quarantined_ledgers(workspace, monkeypatch):
    real_gmtime = time.gmtime
    frozen = time.time()
    monkeypatch.setattr(time, "gmtime", lambda seconds=None: real_gmtime(frozen if seconds is None else seconds))
    kept = []
    for junk in (b"first" * 100, b"second" * 100):
        (workspace / "ledger.sqlite").write_bytes(junk)
        code, out, err = run_cli("repair", workspace)
        assert code == 0, out + err
        kept.append(junk)
    moved = sorted((workspace / "quarantine").glob("*/ledger.sqlite"))
    assert sorted(path.read_bytes() for path in moved) == sorted(kept), moved
    assert len({path.parent.name for path in moved}) == 2


# ------------------------------------------------------------------ (e) a rename the file system refuses


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


def _refused_rename_is_one_line(workspace: Path, folder: Path) -> None:
    code, out, err = run_cli("repair", workspace)
    assert code == 1, out + err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(folder / DONE_FILE) in err and "repair" in err, err


def test_an_immutable_stage_folder_makes_repair_fail_in_one_line(workspace):
    folder = _stage(workspace, "dense")
    (folder / DONE_FILE).write_text("{not json")
    if not _chattr("+i", folder):
        pytest.skip("chattr +i is not available here (no CAP_LINUX_IMMUTABLE or a file system without it)")
    try:
        _refused_rename_is_one_line(workspace, folder)
    finally:
        _chattr("-i", folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores a folder's write permission")
def test_a_read_only_stage_folder_makes_repair_fail_in_one_line(workspace):
    folder = _stage(workspace, "dense")
    (folder / DONE_FILE).write_text("{not json")
    folder.chmod(0o555)
    try:
        _refused_rename_is_one_line(workspace, folder)
    finally:
        folder.chmod(0o755)


def test_a_refused_rename_makes_repair_fail_in_one_line(workspace, monkeypatch):
    """The same as the immutable folder, simulated where chattr is not available."""
    import workers.stages.workspace_files as files

    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(files, "_rename_without_replacing", refuse)
    folder = _stage(workspace, "dense")
    (folder / DONE_FILE).write_text("{not json")
    _refused_rename_is_one_line(workspace, folder)


# ------------------------------------------------------------------ the workspace's own files and folders


def test_a_linked_store_is_damage_and_repair_moves_the_link_not_its_target(workspace, tmp_path):
    elsewhere = tmp_path / "elsewhere.sqlite"
    shutil.move(workspace / "ledger.sqlite", elsewhere)
    (workspace / "ledger.sqlite").symlink_to(elsewhere)
    before = elsewhere.read_bytes()
    code, out, err = run_cli("status", workspace)
    assert code == 2 and "ledger.sqlite: is a symbolic link" in err and "prunesweep repair" in err, err
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and "moved ledger.sqlite to quarantine/" in out, out + err
    assert elsewhere.read_bytes() == before and (workspace / "quarantine").glob("*/ledger.sqlite")
    assert not (workspace / "ledger.sqlite").is_symlink()


@pytest.mark.parametrize("folder", ["stages", "sweeps"])
def test_every_command_refuses_a_linked_folder_of_the_workspace(workspace, tmp_path, folder):
    shutil.move(workspace / folder, tmp_path / "elsewhere")
    (workspace / folder).symlink_to(tmp_path / "elsewhere")
    for command in (("status",), ("results",), ("resume", "--dry-run")):
        code, out, err = run_cli(command[0], workspace, *command[1:])
        assert code == 2 and str(workspace / folder) in err and "symbolic link" in err, (command, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
