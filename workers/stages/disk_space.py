"""A write that fails for want of space (disk full, quota or file size limit), and the user's umask.

Used by every writer of a workspace (:mod:`workers.stages.workspace_files`): a full disk is one
line naming the file and the space left there, exit 1, never a traceback.
"""
from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

#: errors of a full disk, an exceeded quota or file size limit.
SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class DiskFull(OSError):
    """A write failed for want of space (disk full, quota or file size limit): names the file and the free space."""

    exit_code = 1

    def __init__(self, path: Path, cause: BaseException):
        code = getattr(cause, "errno", None) or errno.ENOSPC
        what = {errno.EDQUOT: "the disk quota is exceeded", errno.EFBIG: "the file size limit is exceeded"}.get(
            code, "no space left on the device")
        super().__init__(code, f"cannot write {path}: {what} ({free_space(Path(path).parent)} free there); "
                               "nothing done is lost: free some space, then run `prunesweep resume`")
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self):  # picklable as one message (worker processes send exceptions back)
        return (_disk_full_again, (str(self.path), str(self.strerror), self.errno))


# the name tracebacks and logs have always shown (workers.stages.artifacts re-exports it)
DiskFull.__module__ = "workers.stages.artifacts"


def _disk_full_again(path: str, message: str, code: int) -> DiskFull:
    error = DiskFull.__new__(DiskFull)
    OSError.__init__(error, code, message)
    error.path = Path(path)
    return error


def free_space(folder: Path) -> str:
    """The space this user may still write in ``folder``'s file system, e.g. ``"1.5 MiB"`` (``"?"`` if unknown)."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        info = os.statvfs(folder)
    except OSError:
        return "?"
    size = float(info.f_bavail * info.f_frsize)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return "?"


def out_of_space(error: BaseException, path: Path) -> bool:
    """Whether a failed write of ``path`` failed for want of space.

    torch and pandas wrap the ``OSError`` of a full disk in their own errors, so besides the
    errno of the error (or of its causes) a write is judged out of space when the file
    system has (almost) nothing left.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in SPACE_ERRNOS:
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(error, (KeyboardInterrupt, SystemExit, MemoryError)):
        return False
    try:
        info = os.statvfs(Path(path).parent)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < (1 << 16) or "write failed" in str(error).lower()


@functools.lru_cache(maxsize=1)
def process_umask() -> int:
    """This process's umask (read from /proc where it can be, else by setting and restoring it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # only at start-up, before threads: umask is process-wide
    os.umask(mask)
    return mask
