"""Records a workspace holds and a command reads back (the lock holders, a stage's log and description, the
sweep name its files are named after), checked like user input (issue 25): a damaged one is one clear line or
is written again, never a traceback."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from in_process_cli import MINI, run_cli, launch_mini

from workers.stages.paths import DONE_FILE, LOG_FILE, STAGE_FILE

#: flocks a file as a live launch or stage would, then writes the given record into it (hex) and waits.
HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.write(fd, bytes.fromhex(sys.argv[2]))
    print("held", flush=True)
    time.sleep(600)
""")


@contextmanager
def held(path: Path, record: bytes):
    """Another live process holds the lock file ``path``, whose record is ``record``."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), record.hex()], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline().strip() == "held"
        yield process
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.fixture(scope="module")
def done_workspace(tmp_path_factory):
    """A workspace whose mini sweep ran to the end, and its summary table."""
    root = tmp_path_factory.mktemp("records")
    sweep = launch_mini(root)
    code, table, err = run_cli("results", root / "ws")
    assert code == 0 and "mini" in table, err
    return root / "ws", table


@pytest.fixture
def workspace(done_workspace, tmp_path):
    """A fresh copy of the done workspace."""
    copy = tmp_path / "ws"
    shutil.copytree(done_workspace[0], copy, symlinks=True)
    return copy


def _pending_eval(workspace: Path) -> Path:
    """The evaluation stage of the workspace, made pending (its manifest gone: it has to run again)."""
    stage = next((workspace / "stages").glob("eval-*"))
    (stage / DONE_FILE).unlink()
    return stage


DAMAGED_HOLDERS = [b"null", b"[1, 2]", b'{"since": "yesterday"}', b'{"since": 1e300}', b'{"since": NaN}',
                   b'{"since": -1e18, "pid": 5}', b'{"pid": 1e300}', b'{"pid": [1]}', b'{"host": "a\\nb"}',
                   b'{"command": "' + b"x" * 300 + b'"}', b"\xff\xfe\x00", b"[" * 5000, b'{"host": "h"' + b" " * 5000]


@pytest.mark.parametrize("record", DAMAGED_HOLDERS, ids=lambda record: repr(record[:30]))
def test_a_held_workspace_lock_with_a_damaged_record_is_busy_in_one_line(workspace, record):
    with held(workspace / ".lock", record):
        for command in (("resume", "--no-progress"), ("repair",)):
            code, out, err = run_cli(command[0], workspace, *command[1:])
            assert code == 3 and len(err.strip().splitlines()) == 1, (command, code, out, err)
            assert f"its lock record {workspace / '.lock'} is damaged" in err, err
        code, out, err = run_cli("status", workspace)
        assert code == 0 and "cells: 1 of 1 done" in out, out + err


def test_a_held_workspace_lock_with_a_sound_record_names_its_holder(workspace):
    record = {"host": "node7", "pid": 4242, "since": 1_700_000_000, "command": "prunesweep launch"}
    with held(workspace / ".lock", json.dumps(record).encode()):
        code, _, err = run_cli("resume", workspace, "--no-progress")
    assert code == 3 and "in use by prunesweep launch (pid 4242 on host node7, since 2023-11-14 22:13:20 UTC)" in err


@pytest.mark.parametrize("since", ["1e300", "NaN", "-1e18", "Infinity", '"yesterday"', "true"])
def test_a_live_stage_lock_with_a_damaged_record_is_one_line_of_status(workspace, since):
    from workers.stages.lock import holder

    stage = _pending_eval(workspace)
    with held(stage / "stage.lock", f'{{"host": "node7", "pid": 12, "since": {since}}}'.encode()):
        assert "'since' is not a time" in holder(stage).damage
        code, out, err = run_cli("status", workspace)
    assert code == 0, out + err
    lines = [line for line in out.splitlines() if stage.name in line and "record is damaged" in line]
    assert len(lines) == 1 and "a live process whose stage.lock record is damaged" in lines[0], out


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_a_sweep_name_too_long_for_its_record_file_is_refused_before_anything_is_written(
        write_sweep, sweep_dict, tmp_path, command):
    path = write_sweep({**sweep_dict, "name": "n" * 300})
    code, out, err = run_cli(command, path, *(["--no-progress"] if command == "launch" else []))
    assert code == 2 and len(err.strip().splitlines()) == 1, out + err
    assert f"{path}: name: a sweep name is at most 100 characters" in err and "got 300" in err, err
    assert not (tmp_path / "ws").exists()
    code, out, err = run_cli("plan", write_sweep({**sweep_dict, "name": "n" * 100}))  # the longest name allowed
    assert code == 0, out + err


def test_a_link_in_place_of_a_pending_stage_log_is_replaced_never_followed(workspace, done_workspace, tmp_path):
    stage = _pending_eval(workspace)
    outside = tmp_path / "secret.txt"
    outside.write_text("a colleague's secret\n")
    (stage / LOG_FILE).unlink()
    (stage / LOG_FILE).symlink_to(outside)
    code, out, err = run_cli("resume", workspace, "--no-progress", "--workers", "1")
    assert code == 0 and "0 failed" in out, out + err
    assert outside.read_text() == "a colleague's secret\n" and not (stage / LOG_FILE).is_symlink()
    assert "symbolic link: removed, never followed" in (stage / LOG_FILE).read_text()
    assert run_cli("results", workspace)[1] == done_workspace[1]


def _link_to_another_stage_description(stage: Path) -> None:
    (stage / STAGE_FILE).unlink()
    (stage / STAGE_FILE).symlink_to(next(stage.parent.glob("dense-*")) / STAGE_FILE)


@pytest.mark.parametrize("damage", [lambda stage: (stage / STAGE_FILE).write_text("{ half a file"),
                                    _link_to_another_stage_description], ids=["garbage", "a link to another stage's"])
def test_a_damaged_stage_file_of_a_pending_stage_is_written_again_from_the_plan(workspace, done_workspace, damage):
    stage = _pending_eval(workspace)
    good = (stage / STAGE_FILE).read_bytes()
    damage(stage)
    code, out, err = run_cli("resume", workspace, "--no-progress", "--workers", "1")
    assert code == 0 and "0 failed" in out, out + err
    assert not (stage / STAGE_FILE).is_symlink() and (stage / STAGE_FILE).read_bytes() == good
    assert run_cli("results", workspace)[1] == done_workspace[1]


def test_a_stage_file_that_cannot_be_replaced_is_refused_in_one_line_naming_it_and_repair(workspace):
    stage = _pending_eval(workspace)
    (stage / STAGE_FILE).unlink()
    (stage / STAGE_FILE).mkdir()
    code, out, err = run_cli("resume", workspace, "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1, out + err
    assert f"{stage / STAGE_FILE}: is not a regular file; run `prunesweep repair {workspace}`" in err, err
    assert (stage / STAGE_FILE).is_dir() and not (stage / DONE_FILE).exists()


@pytest.mark.parametrize("manifest", [b'{"files": 0, "metrics": {}}', b"[" * 5000], ids=["files a number", "deep"])
def test_a_manifest_listing_no_mapping_or_nested_too_deep_makes_its_stage_run_again(workspace, manifest):
    stage = next((workspace / "stages").glob("eval-*"))
    (stage / DONE_FILE).write_bytes(manifest)
    code, out, err = run_cli("resume", workspace, "--dry-run")
    assert code == 0 and "would run 1 stage(s)" in out and stage.name in out, out + err


@pytest.mark.parametrize("change", [lambda record: record.update(name="another"), lambda record: record.update(spec=[]),
                                    lambda record: record.update(source=3)],
                         ids=["another name", "spec a list", "source a number"])
def test_repair_moves_aside_a_sweep_record_that_is_not_its_sweeps(workspace, done_workspace, change):
    path = workspace / "sweeps" / "mini.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))
    (workspace / "ledger.sqlite").unlink()
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and "moved sweeps/mini.json to quarantine/" in out and "not a sweep record" in out, out + err


def test_text_in_a_number_column_of_the_results_is_named_and_repair_records_the_row_again(workspace, done_workspace):
    with closing(sqlite3.connect(workspace / "results.sqlite")) as conn:
        conn.execute("UPDATE results SET measured_fraction = 'abc'")
        conn.commit()
    for command in (("results",), ("results", "--pivot"), ("report", "-o", workspace.parent / "page.html")):
        code, out, err = run_cli(command[0], workspace, *command[1:])
        assert code == 2 and len(err.strip().splitlines()) == 1, out + err
        assert f"{workspace / 'results.sqlite'}: column 'measured_fraction' holds 'abc', not a REAL value" in err
        assert f"run `prunesweep repair {workspace}`" in err, err
    assert not (workspace.parent / "page.html").exists()
    code, out, err = run_cli("repair", workspace)
    assert code == 0 and "completed results.sqlite: recorded 1 row(s)" in out, out + err
    assert run_cli("results", workspace)[1] == done_workspace[1]


def test_the_real_process_says_a_damaged_lock_record_without_a_traceback(workspace):
    with held(workspace / ".lock", b'{"since": 1e300}'):
        result = subprocess.run([sys.executable, "-m", "orchestrator", "resume", str(workspace)], capture_output=True,
                                text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert result.returncode == 3 and "Traceback" not in result.stderr and "is damaged" in result.stderr
