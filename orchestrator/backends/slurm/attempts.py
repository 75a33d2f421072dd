"""Automatic retries inside a SLURM job: which failures are retried, and the record status reads.

The failure classes are those of :mod:`orchestrator.backends.failure_classes`, shared by every backend.

A SLURM job runs each stage as a child process (:mod:`.pack`). When that child dies by a
signal (SIGKILL from a node's OOM killer or an administrator, a lost node's processes, a
segfault in a driver) the failure is of class ``infrastructure`` and the job starts the stage
again, from its last checkpoint, up to ``slurm.retries`` times. A child that exits with an
error (the stage's code raised: its traceback is in its log) is ``deterministic``: it is not
retried, and the stage fails (its dependents are blocked, :mod:`.inputs`).

Each retried failure is appended to ``WORKSPACE/slurm/attempts/<key>.json`` together with the
job id; reconcile copies the retried ones into the ledger (``SlurmBackend.job_retries``), so
``status`` lists them with the local and Ray backends' retries, and says which attempt runs.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Optional

from orchestrator.backends.failure_classes import DETERMINISTIC, INFRASTRUCTURE, signal_name
from orchestrator.backends.slurm.inputs import job_id_from
from workers.stages.artifacts import atomic_write_json
from workers.stages.workspace_files import read_json

#: the folder of attempt records, inside the backend's log folder.
ATTEMPTS_DIR = "attempts"


def exit_failure_class(returncode: int) -> str:
    """The failure class (:func:`~orchestrator.backends.failure_classes.failure_class` names that of an error
    class) of a stage process's exit status (a negative one: killed by that signal). The pack's child catches
    what the stage raises and exits 1, so a positive status is the stage's own failure."""
    return INFRASTRUCTURE if returncode < 0 else DETERMINISTIC


#: signals that stop a job on purpose (scancel, a requeue, a shutdown): the job ends, nothing to retry.
STOPPING = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def retriable(returncode: int) -> bool:
    """Whether a stage process that ended so is retried: killed by a signal nobody sent to stop the job."""
    return returncode < 0 and -returncode not in STOPPING


def describe_exit(returncode: int) -> str:
    """``killed by SIGKILL`` or ``exit 1``."""
    return f"killed by {signal_name(-returncode)}" if returncode < 0 else f"exit {returncode}"


def record_path(workspace: Path, key: str) -> Path:
    """Where the attempt record of stage ``key`` lives."""
    return Path(workspace) / "slurm" / ATTEMPTS_DIR / f"{key}.json"


def record_failure(folder: str | Path, returncode: int, retried: bool, environ=os.environ) -> None:
    """Append one failed attempt of the stage in ``folder`` (``WORKSPACE/stages/<key>``) to its record."""
    folder = Path(folder)
    path = record_path(folder.parent.parent, folder.name)
    job_id = job_id_from(environ)
    failures = [failure for failure in read_record(folder.parent.parent, folder.name, job_id) or []]
    failures.append({"class": exit_failure_class(returncode), "why": describe_exit(returncode), "retried": retried,
                     "host": socket.gethostname(), "at": time.strftime("%Y-%m-%d %H:%M:%S")})
    atomic_write_json(path, {"job_id": job_id, "failures": failures})


def recorded_keys(workspace: Path) -> set[str]:
    """The stage keys that have an attempt record: one listing, so that stages without one cost nothing."""
    try:
        names = os.listdir(Path(workspace) / "slurm" / ATTEMPTS_DIR)
    except OSError:
        return set()
    return {name[:-len(".json")] for name in names if name.endswith(".json")}


def read_record(workspace: Path, key: str, job_id: Optional[str]) -> Optional[list[dict]]:
    """The failed attempts job ``job_id`` recorded for stage ``key`` (None: no record of that job)."""
    try:
        record = read_json(record_path(workspace, key), workspace)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("job_id") != job_id or not isinstance(record.get("failures"), list):
        return None
    return [failure for failure in record["failures"] if isinstance(failure, dict)]


def summary(failures: list[dict]) -> str:
    """One phrase for status: ``attempt 2 (1 retried: infrastructure, killed by SIGKILL on vm)``."""
    retried = [failure for failure in failures if failure.get("retried")]
    if not failures:
        return ""
    last = failures[-1]
    return (f"attempt {len(retried) + 1}; {len(retried)} retried, last: {last.get('class')}, {last.get('why')} "
            f"on {last.get('host')} at {last.get('at')}")
