"""Each stage of the local backend in a process of its own, forked from its pool worker.

A pool worker imports the runner once, then forks one child per stage. The child leads a
process group of its own (its data-loader processes join it), dies with the worker
(:mod:`.parent_death`) and holds the stage's lock (:mod:`workers.stages.lock`), so the pid
``status`` shows is that stage's process: a user who signals it (or ``prunesweep cancel
--stage``, which signals its group) stops that stage and no other. The worker itself runs
no stage code: it never starts math threads or CUDA, which a fork would leave broken.

The worker waits for the child, kills what is left of its group (a data-loader process
would otherwise keep the stage's lock), and sends the driver one report: ``ok``, ``error``
(the stage raised: class and traceback tail, as the child told it) or ``died`` (the exit
code, negative for a signal as in :mod:`multiprocessing`, and the child's pid).
"""
from __future__ import annotations

import os
import pickle
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: lines of a traceback sent back with a failure.
TRACEBACK_LINES = 12
#: the most of a report the child writes: a pipe holds it without blocking a child that then exits.
MAX_REPORT_BYTES = 16384


def _child(run_stage: Callable[[Path], Any], folder: Path, write_end: int, worker_pid: int) -> None:
    """Body of the stage's process: run the stage, write how it ended, exit (never returns)."""
    code = 1
    try:
        os.setpgid(0, 0)
        from orchestrator.backends.local.parent_death import die_with_parent

        die_with_parent(worker_pid)
        try:
            run_stage(folder)
            report: tuple = ("ok", None, None)
        except BaseException as error:  # report everything: the worker tells the driver
            lines = traceback.format_exc().rstrip().splitlines()
            report = ("error", type(error).__name__, "\n".join(lines[-TRACEBACK_LINES:])[-MAX_REPORT_BYTES // 2:])
        os.write(write_end, pickle.dumps(report)[:MAX_REPORT_BYTES])
        code = 0
    finally:
        os._exit(code)  # no atexit handler, no flush of the worker's buffers twice


def run_in_own_process(run_stage: Callable[[Path], Any], folder: Path) -> tuple:
    """Run ``run_stage(folder)`` in a forked child leading its own process group; the report for the driver."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(run_stage, folder, write_end, os.getppid())
    os.close(write_end)
    try:
        os.setpgid(pid, pid)  # also here: no signal to the group may race the child's own call
    except OSError:
        pass  # the child did it first, or already ended
    _, status = os.waitpid(pid, 0)
    try:
        os.killpg(pid, signal.SIGKILL)  # a data-loader process left behind would hold the stage's lock
    except (ProcessLookupError, PermissionError):
        pass
    os.set_blocking(read_end, False)  # the child wrote before it exited: what it wrote is in the pipe
    data = b""
    try:
        while chunk := os.read(read_end, MAX_REPORT_BYTES):
            data += chunk
    except BlockingIOError:  # a process the stage forked still holds the write end: no EOF, all read
        pass
    os.close(read_end)
    code = os.waitstatus_to_exitcode(status)
    if code == 0 and data:
        try:
            return tuple(pickle.loads(data))
        except Exception:  # noqa: BLE001 - a cut report: the stage ended without a word
            pass
    return ("died", code, pid)
