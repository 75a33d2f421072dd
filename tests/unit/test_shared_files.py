"""Shared lab file systems: no link is followed, files keep the user's umask, asking who holds a lock writes nothing."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT
from test_read_only_workspace import _can_drop_caps, _drop_overriding_caps
from orchestrator.errors import UserError
from orchestrator.state.workspace import WorkspaceLock
from workers.stages.paths import WORKSPACE_LOCK_FILE
from workers.stages.artifacts import NotARegularFile, atomic_write_json, open_regular


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / WORKSPACE_LOCK_FILE).symlink_to(outside)
    with pytest.raises(UserError, match="is a symbolic link"):
        WorkspaceLock(workspace).acquire()
    with pytest.raises(UserError, match="symbolic link"):
        WorkspaceLock(workspace).holder()
    assert outside.read_text() == "precious"


def test_open_regular_refuses_links_and_non_regular_files(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(NotARegularFile, match="symbolic link"):
        open_regular(tmp_path / "link")
    (tmp_path / "dir").mkdir()
    with pytest.raises(OSError):
        open_regular(tmp_path / "dir")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotARegularFile, match="not a regular file"):
        open_regular(tmp_path / "fifo", append=False)
    with open_regular(tmp_path / "log") as handle:
        handle.write("a\n")
    with open_regular(tmp_path / "log") as handle:
        handle.write("b\n")
    assert (tmp_path / "log").read_text() == "a\nb\n" and target.read_text() == "x"


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_are_created_with_the_umask(tmp_path, umask, mode):
    probe = (f"import os; os.umask({umask}); from workers.stages.artifacts import atomic_write_json, open_regular; "
             f"from results.atomic_files import atomic_save_with; "
             f"atomic_write_json({str(tmp_path / 'a.json')!r}, {{}}); open_regular({str(tmp_path / 'log')!r}).close(); "
             f"atomic_save_with({str(tmp_path / 'e.csv')!r}, lambda f: f.write(b'x'))")
    subprocess.run([sys.executable, "-c", probe], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    for name in ("a.json", "log", "e.csv"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_asking_who_holds_the_lock_writes_nothing(tmp_path):
    with WorkspaceLock(tmp_path):
        before = (tmp_path / WORKSPACE_LOCK_FILE).read_bytes(), (tmp_path / WORKSPACE_LOCK_FILE).stat().st_mtime_ns
        assert WorkspaceLock(tmp_path).holder()["pid"] == os.getpid()
    assert WorkspaceLock(tmp_path).holder() is None
    assert ((tmp_path / WORKSPACE_LOCK_FILE).read_bytes(), (tmp_path / WORKSPACE_LOCK_FILE).stat().st_mtime_ns) == before


def test_the_lock_of_a_read_only_workspace_can_be_asked(tmp_path):
    """Asked by a process that cannot write there: as root, one without the capabilities that
    override file modes (as the read-only-workspace tests do), else the modes hold anyway."""
    reason = _can_drop_caps()
    if reason:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
        pytest.skip(reason)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    atomic_write_json(workspace / "x.json", {})
    with WorkspaceLock(workspace):
        pass
    for path in [workspace, *workspace.iterdir()]:
        path.chmod(path.stat().st_mode & ~0o222)
    probe = (f"import os, sys; from orchestrator.state.workspace import WorkspaceLock\n"
             f"for path in ({str(workspace / 'new')!r}, {str(workspace / WORKSPACE_LOCK_FILE)!r}):\n"
             f"    try: open(path, 'a').close()\n"
             f"    except PermissionError: pass\n"
             f"    else: sys.exit(f'{{path}} is writable to the reader: the workspace is not read-only to it')\n"
             f"print(WorkspaceLock({str(workspace)!r}).holder())")
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              preexec_fn=_drop_overriding_caps if os.geteuid() == 0 else None)
    finally:
        for path in [workspace, *workspace.iterdir()]:
            path.chmod(path.stat().st_mode | 0o200)
    assert (done.returncode, done.stdout) == (0, "None\n"), done.stdout + done.stderr
    assert sorted(path.name for path in workspace.iterdir()) == sorted([WORKSPACE_LOCK_FILE, "x.json"])


def test_a_symlinked_stage_log_is_replaced_never_followed(tmp_path):
    import logging

    from workers.entry import stage_log

    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "log.txt").symlink_to(outside)
    with stage_log(stage):
        logging.getLogger("workers").info("a line of ours")
    log = stage / "log.txt"
    assert not log.is_symlink() and outside.read_text() == "precious"
    assert "symbolic link: removed, never followed" in log.read_text() and "a line of ours" in log.read_text()
    (stage / "log.txt").unlink()
    (stage / "log.txt").mkdir()  # a folder is left alone: the stage fails naming it
    with pytest.raises(OSError, match="log.txt"):
        with stage_log(stage):
            pass
