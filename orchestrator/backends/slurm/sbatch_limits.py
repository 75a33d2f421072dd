"""Every ``sbatch`` of a launch under a time limit (a full queue makes sbatch wait forever), and the
error a failed or timed-out ``sbatch`` gives the user."""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

from workers.stages.workspace_files import atomic_write_bytes, read_bytes

#: the exit status of coreutils' ``timeout`` when it had to stop the command.
_TIMED_OUT = 124


@contextlib.contextmanager
def sbatch_time_limit(seconds: int, shims: Path) -> Iterator[None]:
    """Run every ``sbatch`` started in the block under ``timeout`` (sbatch waits forever on a full queue).

    submitit runs ``sbatch`` by name, and builds its array executors itself, so an executor
    subclass cannot reach every submission: instead ``shims/`` holds an ``sbatch`` that runs
    the real one under coreutils' ``timeout``, first on ``PATH`` for the block.
    """
    real = shutil.which("sbatch")
    if real is None:  # preflight said SLURM answers; without sbatch submitit's own error is the clearest
        yield
        return
    folder = Path(shims) / f"sbatch-timeout-{seconds}"
    script = f'#!/bin/sh\nexec timeout --kill-after=10 {seconds} {shlex.quote(real)} "$@"\n'
    shim = folder / "sbatch"
    try:
        current = read_bytes(shim, limit=1 << 16)
    except OSError:
        current = b""
    if current != script.encode():
        atomic_write_bytes(shim, script.encode(), mode=0o777)
    path = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{folder}{os.pathsep}{path}"
    try:
        yield
    finally:
        os.environ["PATH"] = path


def submission_error(error: Exception, submitted: int, total: int):
    """A UserError explaining a failed sbatch, and what was submitted before it."""
    from orchestrator.errors import UserError

    text = str(error)
    before = (f"{submitted} of {total} stage(s) were submitted before it and are queued; "
              "`prunesweep resume WORKSPACE --backend slurm` submits the rest"
              ) if submitted else "nothing was submitted"
    if getattr(error.__cause__, "returncode", None) == _TIMED_OUT:  # submitit's FailedJobError wraps the exit
        return UserError(f"backend slurm: sbatch did not answer in time (slurm.submit_timeout_s); the controller may "
                         f"be overloaded or the queue full (MaxJobCount); {before}")
    last = (text.strip().splitlines() or ["no message"])[-1]
    return UserError(f"backend slurm: sbatch failed: {last}; {before}")
