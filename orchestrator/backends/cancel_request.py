"""A user's request to cancel one running stage: ``STAGE_FOLDER/cancel.json``.

``prunesweep cancel WS --stage KEY`` writes it before it asks the stage's backend to stop
the stage, so whoever then sees the stage end (the local driver, the Ray driver, reconcile
for a SLURM job) tells a cancelled stage from one that failed or was killed by something
else, and neither retries it nor calls it failed. The driver removes the request before
it runs the stage again (``resume``). Read back checked like every record
(:func:`workers.stages.lock.parse_record`): a request present but damaged still cancels,
with a reason that says so.
"""
from __future__ import annotations

import errno
import os
import socket
import time
from pathlib import Path
from typing import Optional

from workers.stages.artifacts import atomic_write_json
from workers.stages.lock import MAX_RECORD_BYTES, parse_record
from workers.stages.paths import CANCEL_FILE
from workers.stages.workspace_files import NotARegularFile, read_bytes

#: the most characters of a request's reason kept (one line of ``status``).
MAX_REASON = 200


def request_cancel(folder: Path, reason: str) -> None:
    """Record that the stage in ``folder`` is to be cancelled, and why (one line)."""
    line = " ".join(reason.split())[:MAX_REASON]
    atomic_write_json(Path(folder) / CANCEL_FILE,
                      {"reason": line, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})


def cancel_reason(folder: Path) -> Optional[str]:
    """Why the stage in ``folder`` was cancelled, or None when no request is there (a link or a
    folder named like the request is no request of ours)."""
    try:
        data = read_bytes(Path(folder) / CANCEL_FILE, limit=MAX_RECORD_BYTES + 1)
    except NotARegularFile:
        return None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        return f"cancelled (its {CANCEL_FILE} cannot be read: {error.strerror or error})"
    fields, damage = parse_record(data, texts=("reason", "host"))
    if damage:
        return f"cancelled (its {CANCEL_FILE} is damaged: {damage})"
    return fields.get("reason") or "cancelled"


def clear_cancel(folder: Path) -> None:
    """Forget a request (the stage is about to run again)."""
    try:
        (Path(folder) / CANCEL_FILE).unlink()
    except FileNotFoundError:
        pass
    except IsADirectoryError:  # a folder planted there is no request of ours; leave it alone
        pass
