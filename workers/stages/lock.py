"""One live process per stage: a lock file in the stage folder, held while the stage runs.

:func:`hold` takes an exclusive ``flock`` on ``STAGE_FOLDER/stage.lock`` for as long as the
stage runs in this process and writes who holds it (host, pid, since). The kernel drops the
lock when the process ends, however it ends (SIGKILL included), so "a live process holds the
lock" is exactly "the stage is running". A second process that tries to run the same stage
gets :class:`StageBusy` instead of writing beside the first. :func:`holder` answers, for
``status``, ``resume`` and every backend, whether a live process holds it and who.

Why ``flock`` and not POSIX ``fcntl`` locks: a POSIX lock is dropped when the process closes
*any* descriptor of the file, so a reader in the same process would release it. A
``flock`` lock belongs to the open file description; the descriptor is close-on-exec, so a
program the stage executes does not inherit it (a ``fork``-ed helper, such as a data loader
process, does: it is part of the stage). On NFS, Linux emulates ``flock`` with byte-range
locks the server arbitrates, so the lock holds across the nodes of a cluster.

The lock file is opened without following a symbolic link (a link planted in a shared
workspace must not make us lock or write a file elsewhere) and is never removed: removing
it would let a second process lock a new file while the first still holds the old one.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from workers.stages.workspace_files import NotARegularFile, open_file, open_regular

LOCK_FILE = "stage.lock"
#: seconds :func:`hold` keeps trying while someone holds the lock (a reader's probe holds it for microseconds).
ACQUIRE_GRACE_S = 2.0


@dataclass(frozen=True)
class Holder:
    """Who holds a stage's lock: a live process on ``host`` with ``pid``, running since ``since`` (epoch s)."""

    host: str
    pid: Optional[int]
    since: Optional[float]

    def describe(self) -> str:
        """``pid 123 on node7 since 2026-12-01 04:50:00 UTC``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since)) if self.since else "?"
        return f"pid {self.pid if self.pid is not None else '?'} on {self.host or '?'} since {when}"


class StageBusy(RuntimeError):
    """Another live process runs this stage (holds its lock)."""

    def __init__(self, stage_dir: Path, holder: Optional[Holder]):
        who = holder.describe() if holder else "another process"
        super().__init__(f"{Path(stage_dir).name}: already running ({who}); not started beside it")
        self.holder = holder


def _read_holder(handle) -> Optional[Holder]:
    handle.seek(0)
    try:
        record = json.loads(handle.read() or "null")
    except ValueError:  # being written by its holder right now
        record = None
    if not isinstance(record, dict):
        return None
    pid, since = record.get("pid"), record.get("since")
    return Holder(str(record.get("host") or ""), pid if isinstance(pid, int) else None,
                  float(since) if isinstance(since, (int, float)) else None)


@contextmanager
def hold(stage_dir: Path, grace_s: float = ACQUIRE_GRACE_S) -> Iterator[Holder]:
    """Hold the stage's lock for the block; :class:`StageBusy` if a live process holds it.

    The record is written in place (not by rename): the lock belongs to this file, and
    another file renamed over it would be a second, free lock.
    """
    handle = open_regular(Path(stage_dir) / LOCK_FILE, append=False)
    try:
        deadline = time.monotonic() + grace_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() >= deadline:
                    raise StageBusy(Path(stage_dir), _read_holder(handle)) from None
                time.sleep(0.05)
        me = Holder(socket.gethostname(), os.getpid(), time.time())
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": me.host, "pid": me.pid, "since": me.since}) + "\n")
        handle.flush()
        yield me
    finally:
        handle.close()  # releases the lock


def holder(stage_dir: Path) -> Optional[Holder]:
    """The live process holding the stage's lock, or None when no process does.

    Probes with a shared lock that it releases at once: it never blocks, never creates the
    file and writes nothing, so a reading command (``status``) may call it.
    """
    try:
        fd = open_file(Path(stage_dir) / LOCK_FILE)[0]
    except NotARegularFile:  # a link or a FIFO is no lock file of ours
        return None
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise
    with os.fdopen(fd, "r", encoding="utf-8") as handle:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            return _read_holder(handle) or Holder("", None, None)
        return None  # closing the file releases the probe's lock
