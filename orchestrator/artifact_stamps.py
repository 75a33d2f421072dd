"""Verification of done stages without re-hashing unchanged artifacts on every command.

Every command reconciles the ledger with the artifacts on disk. Hashing every artifact
each time costs a full read of the workspace (a ResNet-50 sweep holds hundreds of
gigabytes of checkpoints), so after a stage's artifacts have been checksummed the ledger
keeps each file's stamp (size, modification time in ns, inode). A later command trusts a
file whose stamp is unchanged and hashes only the others; ``--verify`` hashes them all.

A stamp is kept only for a file last modified at least :data:`SETTLED_S` seconds before
it was hashed: a file rewritten within the file system's timestamp granularity of its
previous write could otherwise keep its stamp with new content (git's "racy" index entries).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

from workers.artifacts import DONE_FILE, verify_done

from .ledger import Ledger
from .workspace import stage_dir

#: a file modified less than this many seconds before its hash was taken gets no stamp.
SETTLED_S = 2.0

Stamp = tuple[int, int, int]


def file_stamp(path: Path) -> Optional[Stamp]:
    """``(size, mtime_ns, inode)`` of a file, or ``None`` when it does not exist."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def _listed_files(folder: Path) -> Optional[list[str]]:
    """``DONE.json`` and every file it lists, or ``None`` when the manifest is unreadable."""
    try:
        files = json.loads((folder / DONE_FILE).read_text())["files"]
        return sorted({DONE_FILE, *files})
    except (OSError, ValueError, KeyError, TypeError):
        return None


_UNREAD: dict = {}


def stamps_unchanged(folder: str | Path, kept: Optional[dict[str, list[int]]]) -> bool:
    """Whether every file of ``kept`` (``DONE.json`` among them) still has its recorded stamp.

    ``DONE.json`` unchanged means the list of files it names is the one stamped, so the
    manifest is not read again: a done stage costs one ``stat`` per file and nothing else.
    """
    if not kept or DONE_FILE not in kept:
        return False
    base = os.fspath(folder)
    for name, stamp in kept.items():
        try:
            info = os.stat(os.path.join(base, name))
        except FileNotFoundError:
            return False
        if (info.st_size, info.st_mtime_ns, info.st_ino) != tuple(stamp):
            return False
    return True


def verify_stage(workspace: Path, ledger: Ledger, key: str, rehash: bool = False,
                 kept: Optional[dict[str, list[int]]] = _UNREAD) -> tuple[bool, str]:
    """Like :func:`workers.artifacts.verify_done` for stage ``key``, trusting unchanged stamps.

    Returns ``(True, "")`` or ``(False, reason)`` (``"not run"`` when there is no manifest).
    ``rehash`` ignores the stamps kept in the ledger and hashes every artifact. ``kept``:
    the stage's recorded stamps when the caller read them all at once
    (:meth:`~.ledger.Ledger.all_verified_stamps`); else they are read from the ledger.
    """
    folder = stage_dir(workspace, key)
    if kept is _UNREAD:
        kept = ledger.verified_stamps(key)
    if not rehash and stamps_unchanged(folder, kept):
        return True, ""
    hashed_at = time.time()
    ok, reason = verify_done(folder)
    stamps = None
    if ok:
        current = {name: file_stamp(folder / name) for name in _listed_files(folder) or []}
        if all(stamp is not None and hashed_at - stamp[1] / 1e9 >= SETTLED_S for stamp in current.values()):
            stamps = {name: list(stamp) for name, stamp in current.items() if stamp is not None}
    if stamps != kept:
        ledger.set_verified_stamps(key, stamps)
    return ok, reason
