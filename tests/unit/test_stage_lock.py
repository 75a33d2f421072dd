"""The per-stage lock: held by a live process exactly while it runs the stage, never through a link."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from workers.stages.artifacts import NotARegularFile
from workers.stages.error_record import clear_error, read_error, write_error
from workers.stages.paths import ERROR_FILE, STAGE_LOCK_FILE
from workers.stages.lock import StageBusy, hold, holder

HOLDER_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from workers.stages.lock import hold
    with hold(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
""")


@pytest.fixture
def other_process(tmp_path):
    """A separate process holding the lock of ``tmp_path/stage`` until killed."""
    stage = tmp_path / "stage"
    stage.mkdir()
    process = subprocess.Popen([sys.executable, "-c", HOLDER_SCRIPT, str(stage)], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert process.stdout.readline().strip() == "held"
    yield stage, process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_a_live_holder_is_seen_with_its_pid_and_host_and_keeps_a_second_process_out(other_process):
    stage, process = other_process
    seen = holder(stage)
    assert seen is not None and seen.pid == process.pid and seen.host and seen.since <= time.time()
    with pytest.raises(StageBusy, match=f"pid {process.pid}"):
        with hold(stage, grace_s=0.2):
            pass


def test_the_lock_is_free_once_its_holder_is_killed(other_process):
    stage, process = other_process
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert holder(stage) is None
    with hold(stage) as me:
        assert me.pid == os.getpid()
        assert holder(stage) is not None  # a probe from this process sees its own hold too


def test_reading_never_creates_the_lock_file_and_a_released_lock_is_free(tmp_path):
    assert holder(tmp_path) is None and not (tmp_path / STAGE_LOCK_FILE).exists()
    with hold(tmp_path):
        pass
    assert (tmp_path / STAGE_LOCK_FILE).exists() and holder(tmp_path) is None


def test_a_symbolic_link_as_lock_file_is_neither_followed_nor_trusted(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / STAGE_LOCK_FILE).symlink_to(outside)
    with pytest.raises(NotARegularFile, match="symbolic link"):
        with hold(stage):
            pass
    assert holder(stage) is None and outside.read_text() == "keep"


def test_the_error_record_is_written_read_and_cleared(tmp_path):
    assert read_error(tmp_path) is None
    write_error(tmp_path, ValueError("bad data"), "Traceback...\nValueError: bad data")
    record = read_error(tmp_path)
    assert record["error_class"] == "ValueError" and "bad data" in record["message"] and record["pid"] == os.getpid()
    clear_error(tmp_path)
    assert read_error(tmp_path) is None
    (tmp_path / "elsewhere.json").write_text('{"error_class": "ValueError"}')
    (tmp_path / ERROR_FILE).symlink_to(tmp_path / "elsewhere.json")
    assert read_error(tmp_path) is None


def test_a_backend_queue_waits_for_a_held_dependency_then_runs_it(tmp_path):
    from orchestrator.backends.base import DependencyQueue, StageToRun

    held, child = tmp_path / "held", tmp_path / "child"
    held.mkdir()
    with hold(held):  # another open file description: the same conflict as another process's
        queue = DependencyQueue([StageToRun("child", child, waits_for=("held",))])
        assert queue.held == {"held"} and not queue.has_ready()
        queue.release_free()
        assert queue.held == {"held"} and not queue.has_ready()
    queue.release_free()
    assert queue.held == set() and queue.pop().key == "held" and queue.pop() is None
    queue.done("held")
    assert queue.pop().key == "child"
