"""Diagnosis of a workspace's two stores before a command uses them; reads only.

A damaged store (garbage, truncated, empty, a folder, unreadable) makes a command exit 2 with
one line naming the file and pointing to ``prunesweep repair`` (:mod:`orchestrator.commands.repair`);
a store the user may not write makes a command that writes exit 2 saying so.
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from orchestrator.errors import UserError
from workers.stages.paths import LEDGER_FILE, RESULTS_FILE, WORKSPACE_LOCK_FILE
from workers.stages.workspace_files import open_file

if TYPE_CHECKING:
    from results.row import DamagedValue

#: below this much free space a reading command writes nothing (it reads through a copy).
READ_ONLY_BELOW_BYTES = 1 << 20
_SQLITE_MAGIC = b"SQLite format 3\x00"


def store_problem(path: Path) -> Optional[str]:
    """What makes the store file ``path`` unusable, from its metadata and SQLite header; None if it
    looks sound or does not exist. Reads 100 bytes, never opens it with SQLite, writes nothing."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if stat.S_ISLNK(info.st_mode):  # SQLite would open what it points to: a file outside the workspace
        return "is a symbolic link, which prunesweep does not follow"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a database"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    try:
        fd = open_file(path)[0]
        try:
            header = os.read(fd, 100)
        finally:
            os.close(fd)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if info.st_size == 0:
        return "is empty"
    if not header.startswith(_SQLITE_MAGIC) or len(header) < 100:
        return "is not an SQLite database (overwritten or damaged)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return "has a damaged SQLite header"
    pages = int.from_bytes(header[28:32], "big")
    header_count_valid = header[24:28] == header[92:96]
    no_writer = not Path(f"{path}-wal").exists()  # while a writer's WAL exists the file may lag its header
    if info.st_size % page_size or (no_writer and header_count_valid and pages and info.st_size < pages * page_size):
        return f"is truncated ({info.st_size} bytes of {pages * page_size})"
    return None


def must_not_write(workspace: Path) -> bool:
    """Whether a reading command must leave ``workspace`` as it is: the user may not write its
    folder or one of its stores, its disk is (nearly) full, or a launch/resume holds its lock.
    Opens nothing for writing."""
    workspace = Path(workspace)
    if not os.access(workspace, os.W_OK | os.X_OK):
        return True
    try:
        if os.statvfs(workspace).f_bavail * os.statvfs(workspace).f_frsize < READ_ONLY_BELOW_BYTES:
            return True  # a (nearly) full disk: what a reader would write could fail halfway
    except OSError:
        return True
    for name in (LEDGER_FILE, RESULTS_FILE):
        if (workspace / name).exists() and not os.access(workspace / name, os.W_OK):
            return True
    try:
        fd = open_file(workspace / WORKSPACE_LOCK_FILE)[0]
    except FileNotFoundError:
        return False
    except OSError:
        return True  # a link or an unreadable lock: WorkspaceLock.holder says so when asked
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the shared lock
    return False


def _damaged(path: Path, problem: str, workspace: Path) -> UserError:
    return UserError(f"{path}: {problem}; run `prunesweep repair {workspace}` to move it aside and rebuild it "
                     "from the stage folders")


def damaged_value(error: DamagedValue) -> UserError:
    """One line for a results table holding a value its column does not take, and the repair that mends it."""
    return UserError(f"{error}; run `prunesweep repair {error.workspace}` to remove the row and record it again "
                     "from its stage")


def check_stores(workspace: Path, writing: bool = False) -> None:
    """Raise UserError (exit 2, one line naming the file and what to do) when a store of
    ``workspace`` is damaged, or, for a ``writing`` command, cannot be written."""
    workspace = Path(workspace)
    for name in (LEDGER_FILE, RESULTS_FILE):
        path = workspace / name
        problem = store_problem(path)
        if problem:
            raise _damaged(path, problem, workspace)
        if writing and path.exists() and not os.access(path, os.W_OK):
            raise UserError(f"{path}: is read-only for you; `status` and `results` can read this workspace, but to "
                            "run stages in it you need write access (or a copy of the workspace)")
    if writing and not os.access(workspace, os.W_OK | os.X_OK):
        raise UserError(f"{workspace}: the workspace folder is read-only for you; `status` and `results` can read "
                        "it, but to run stages in it you need write access (or a copy of the workspace)")


@contextmanager
def table_refusals() -> Iterator[None]:
    """What reading the rows of results tables can meet, as one line (exit 2): a table of a newer
    prunesweep (a value of the wrong type is :func:`damaged_value`'s)."""
    from results.versioned_sqlite import StoreVersionError

    try:
        yield
    except StoreVersionError as error:
        raise UserError(str(error)) from None


_AFTER_SPACE = ("nothing done is lost: free some space, then run the command again (`prunesweep resume WORKSPACE` "
                "continues a launched sweep)")


def explain_space_error(error: OSError, workspace: Optional[Path]) -> str:
    """One line for a write that failed for want of space: the file and the space left there."""
    from results.atomic_files import DiskFull as ExportDiskFull
    from workers.stages.artifacts import DiskFull, free_space

    where = Path(error.filename) if error.filename else workspace
    if isinstance(error, (DiskFull, ExportDiskFull)) or where is None:  # those two name the file and the space
        return str(error)
    return f"cannot write {where}: {error.strerror} ({free_space(where)} free there); {_AFTER_SPACE}"


def _nearly_full(workspace: Optional[Path]) -> bool:
    try:
        info = os.statvfs(workspace) if workspace is not None else None
    except OSError:
        return False
    return info is not None and info.f_bavail * info.f_frsize < (1 << 16)


def explain_database_error(error: sqlite3.DatabaseError, workspace: Optional[Path]) -> str:
    """One line for an SQLite error a command met in ``workspace`` (None when unknown)."""
    text = str(error)
    where = f" in {workspace}" if workspace is not None else ""
    if "full" in text.lower() or ("disk i/o" in text.lower() and _nearly_full(workspace)):
        from workers.stages.artifacts import free_space

        left = free_space(workspace) if workspace is not None else "?"
        return f"a database{where} could not be written: {text} ({left} free there); {_AFTER_SPACE}"
    if "locked" in text.lower() or "busy" in text.lower():
        return f"a database{where} stayed busy ({text}); run the command again"
    if "readonly" in text.lower() or "read-only" in text.lower():
        return f"a database{where} is read-only for you ({text}); run this command where you may write"
    fix = f"run `prunesweep repair {workspace}`" if workspace is not None else "run `prunesweep repair WORKSPACE`"
    return f"a database{where} is damaged ({text}); {fix} to rebuild it from the stage folders"
