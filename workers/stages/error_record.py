"""The error record a stage leaves when its own code raises: ``STAGE_FOLDER/error.json``.

A backend that sees only how a process ended (an exit status, a signal, a scheduler's job
state) reads it to tell a stage that raised (the record is there: a deterministic failure)
from a process killed under it (no record: an infrastructure failure). The worker removes
the record when an attempt starts, so one that is there belongs to the latest attempt.
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from workers.stages.artifacts import atomic_write_json
from workers.stages.paths import ERROR_FILE
from workers.stages.workspace_files import read_json


def clear_error(stage_dir: Path) -> None:
    """Forget the record of an earlier attempt (an attempt is starting)."""
    (Path(stage_dir) / ERROR_FILE).unlink(missing_ok=True)


def write_error(stage_dir: Path, error: BaseException, traceback_tail: str) -> None:
    """Record that the stage's code raised ``error`` (class, message, the traceback's last lines, where, when)."""
    atomic_write_json(Path(stage_dir) / ERROR_FILE, {
        "error_class": type(error).__name__, "message": traceback_tail or str(error),
        "host": socket.gethostname(), "pid": os.getpid(), "at": time.time()})


def read_error(stage_dir: Path) -> Optional[dict[str, Any]]:
    """The latest attempt's error record, or None when there is none (or it cannot be read)."""
    try:  # never through a symbolic link: a planted one must not decide how a stage failed
        record = read_json(Path(stage_dir) / ERROR_FILE, limit=1 << 20)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
