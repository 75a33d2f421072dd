"""Atomic file writes for the results package: a temp file in the same folder, fsync, rename.

A crash leaves either the old file or the new one, never half of one. The workers keep
their own copy of this in ``workers/stages/artifacts.py`` (which also skips writes on ranks
other than 0): the worker package is what a SLURM job snapshots and runs alone, so it
imports nothing from here, and ``results`` imports nothing from ``workers``.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: errors of a full disk, an exceeded quota or file size limit.
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFull(OSError):
    """A write of the results package (an export, a report) failed for want of space; the message names the
    file and the space left. The workers' writes raise their own ``workers.stages.disk_space.DiskFull``
    (results imports nothing from workers): one idea, one name in each package."""

    def __init__(self, path: Path, code: int):
        what = {errno.EDQUOT: "the disk quota is exceeded", errno.EFBIG: "the file size limit is exceeded"}.get(
            code, "no space left on the device")
        super().__init__(code, f"cannot write {path}: {what} ({_free(path.parent)} free there); the file is "
                               "unchanged: free some space or write it elsewhere")

    def __str__(self) -> str:
        return str(self.strerror)


def _free(folder: Path) -> str:
    try:
        info = os.statvfs(folder)
    except OSError:
        return "?"
    return f"{info.f_bavail * info.f_frsize / 2**20:.1f} MiB"


def _out_of_space(error: BaseException, folder: Path) -> int | None:
    """The errno of a write that failed for want of space (pandas and pyarrow wrap it), else None."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in SPACE_ERRNOS:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError)):
        return None
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return errno.ENOSPC if info.f_bavail * info.f_frsize < (1 << 16) else None


def atomic_save_with(path: Path, save: Callable[[Any], Any]) -> None:
    """Write ``path`` atomically with ``save(handle)``, e.g. ``lambda f: df.to_csv(f)``.

    A full disk (or quota) raises :class:`DiskFull` naming the file and the space left;
    the temp file is removed and ``path`` keeps its old content.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if error.errno in SPACE_ERRNOS:
            raise DiskFull(path, error.errno) from error
        raise
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600; exports keep the user's umask
        with os.fdopen(fd, "wb") as handle:
            save(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        code = None if isinstance(error, DiskFull) else _out_of_space(error, path.parent)
        if code is not None:
            raise DiskFull(path, code) from error
        raise
