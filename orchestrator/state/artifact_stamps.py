"""Verification of done stages without re-hashing unchanged artifacts on every command.

Every command reconciles the ledger with the artifacts on disk. Hashing every artifact
each time costs a full read of the workspace (a ResNet-50 sweep holds hundreds of
gigabytes of checkpoints), so after a stage's artifacts have been checksummed the ledger
keeps each file's stamp (size, modification time in ns, inode), and the stamp of the stage
folder itself (modification time, inode). Three depths of check follow:

- a **glance** (reading commands: ``status``, ``results``, ``report``): the folder's stamp
  only. Creating, deleting, renaming or atomically replacing any file of the folder (every
  write of a stage is a rename) changes it; rewriting a file in place does not. One
  ``stat`` per done stage; an unchanged folder is trusted.
- a **stamp check** (``launch``, ``resume`` and the driver, before a stage's artifacts are
  used): the stamp of ``DONE.json`` and of every file it lists, which also sees a file
  rewritten in place. A stage that passes gets its folder stamp renewed.
- a **hash** of every listed file against ``DONE.json``: for a stage whose stamps changed,
  and for every stage under ``--verify``.

A stamp is kept only for a file (or folder) last modified at least :data:`SETTLED_S`
seconds before it was hashed: one rewritten within the file system's timestamp granularity
of its previous write could otherwise keep its stamp with new content (git's "racy" index
entries). No check follows a symbolic link.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

from orchestrator.state.ledger import Ledger
from workers.stages.artifacts import inspect_done
from workers.stages.paths import DONE_FILE, STAGES_DIR

#: a file modified less than this many seconds before its hash was taken gets no stamp.
SETTLED_S = 2.0

def folder_glance(folder: str, kept: Optional[tuple[int, int]]) -> bool:
    """Whether the stage folder still has the stamp ``kept`` recorded when its artifacts last checked out."""
    if kept is None:
        return False
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    return (info.st_mtime_ns, info.st_ino) == kept


def stamps_unchanged(folder: str | Path, kept: Optional[dict[str, list[int]]]) -> bool:
    """Whether every file of ``kept`` (``DONE.json`` among them) still has its recorded stamp.

    ``DONE.json`` unchanged means the list of files it names is the one stamped, so the
    manifest is not read again: a done stage costs one ``lstat`` per file and nothing else.
    """
    if not kept or DONE_FILE not in kept:
        return False
    base = os.fspath(folder)
    for name, stamp in kept.items():
        try:
            info = os.lstat(os.path.join(base, name))
        except FileNotFoundError:
            return False
        if (info.st_size, info.st_mtime_ns, info.st_ino) != tuple(stamp):
            return False
    return True


def settled_folder_stamp(folder: str, now: float) -> Optional[tuple[int, int]]:
    """The folder's ``(mtime_ns, inode)`` when it was last changed :data:`SETTLED_S` before ``now``, else None."""
    try:
        info = os.lstat(folder)
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_ino) if now - info.st_mtime_ns / 1e9 >= SETTLED_S else None


def verify_stage(workspace: Path, ledger: Ledger, key: str, rehash: bool = False,
                 kept: Optional[dict[str, list[int]]] = None, manifests: Optional[dict[str, dict]] = None,
                 kept_folder: Optional[tuple[int, int]] = None) -> tuple[bool, str]:
    """Like :func:`workers.stages.artifacts.verify_done` for stage ``key``, trusting unchanged stamps.

    Returns ``(True, "")`` or ``(False, reason)`` (``"not run"`` when there is no manifest).
    ``rehash`` ignores the stamps kept in the ledger and hashes every artifact. ``kept`` and
    ``kept_folder``: the stage's recorded stamps (:meth:`~.ledger.Ledger.all_verified_stamps`,
    read once for a whole workspace). ``manifests``: where to put the manifest of a stage
    that was hashed (so that ingesting its results does not read it again).
    """
    folder = os.path.join(workspace, STAGES_DIR, key)  # a string: this runs for every stage of a workspace
    if not rehash and stamps_unchanged(folder, kept):
        current = settled_folder_stamp(folder, time.time())
        if current is not None and current != kept_folder:
            ledger.set_folder_stamp(key, current)
        return True, ""
    hashed_at = time.time()
    check = inspect_done(folder)
    stamps: Optional[dict[str, list[int]]] = None
    folder_stamp = None
    if check.ok:
        if manifests is not None and check.manifest is not None:
            manifests[key] = check.manifest
        if all(hashed_at - info.st_mtime_ns / 1e9 >= SETTLED_S for info in check.stats.values()):
            stamps = {name: [info.st_size, info.st_mtime_ns, info.st_ino] for name, info in check.stats.items()}
            folder_stamp = settled_folder_stamp(folder, hashed_at)
    if stamps != kept or (stamps is not None and folder_stamp != kept_folder):
        ledger.set_verified_stamps(key, stamps, folder_stamp)
    return check.ok, check.reason
