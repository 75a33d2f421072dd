"""One launch/resume per workspace; a lock left by a dead process is taken over."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import ROOT
from orchestrator.errors import WorkspaceBusy
from orchestrator.state.workspace import WorkspaceLock

HOLDER = textwrap.dedent("""
    import sys, time
    from orchestrator.state.workspace import WorkspaceLock
    lock = WorkspaceLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def _hold_lock(workspace):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(workspace)], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_holder_is_refused_with_the_holder_named(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(WorkspaceBusy) as info:
            WorkspaceLock(tmp_path).acquire()
        message = str(info.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message
        assert WorkspaceLock(tmp_path).holder() is not None
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the dead holder's lock: it is taken over safely
    with WorkspaceLock(tmp_path):
        pass
    assert WorkspaceLock(tmp_path).holder() is None


def test_launch_refuses_while_locked(tmp_path, sweep_dict, write_sweep):
    path = write_sweep(sweep_dict)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    holder = _hold_lock(workspace)
    try:
        started = time.time()
        result = subprocess.run([sys.executable, "-m", "orchestrator", "launch", str(path)], capture_output=True,
                                text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
        assert result.returncode == 3
        assert f"pid {holder.pid}" in result.stderr and "Traceback" not in result.stderr
        assert time.time() - started < 60
        assert not (workspace / "stages").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
