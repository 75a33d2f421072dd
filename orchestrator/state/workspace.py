"""A workspace folder: its stage folders, its lock, and checks before anything is written.

Layout::

    WORKSPACE/
      ledger.sqlite        stage states, sweeps, cells (orchestrator.state.ledger)
      results.sqlite       the results table (results.table)
      stages/<key>/        one folder per stage (workers.stages.artifacts)
      .lock                held by the one launch/resume running here
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any, Optional

from orchestrator.errors import UserError, WorkspaceBusy
from orchestrator.planning.stage_identity import Stage, stage_key
from orchestrator.state.store_health import check_stores
from workers.stages.artifacts import MalformedStageFile, atomic_write_bytes, json_file_bytes, read_stage
from workers.stages.lock import describe_since, read_record
from workers.stages.new_files import atomic_write_new_files
from workers.stages.paths import LEDGER_FILE, OWN_FOLDERS, STAGE_FILE, STAGES_DIR, WORKSPACE_LOCK_FILE
from workers.stages.paths import stage_dir as stage_dir  # the backends' and commands' way to it
from workers.stages.workspace_files import LinkedFolder, NotARegularFile, open_file, open_folder, open_regular

#: the text fields of the workspace lock's record.
_TEXTS = ("host", "command")
#: the most of a ``stage.json`` read back to check it (ours are a few KiB).
MAX_STAGE_FILE_BYTES = 1 << 20


#: file systems that hold no files of ours: a workspace there could never keep a result.
PSEUDO_FILE_SYSTEMS = frozenset({"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs",
                                 "securityfs", "pstore", "bpf", "configfs", "fusectl", "mqueue", "efivarfs",
                                 "binfmt_misc", "autofs", "rpc_pipefs", "nsfs"})


def file_system_type(path: Path, mountinfo: str = "/proc/self/mountinfo") -> Optional[str]:
    """The type of the file system holding the existing path ``path`` (Linux), else None."""
    try:
        lines = Path(mountinfo).read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    resolved = str(Path(path).resolve())
    for line in lines:
        fields = line.split()
        if "-" not in fields:
            continue
        mount_point = fields[4].replace("\\040", " ")
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fields[fields.index("-") + 1]
    return kind


def check_creatable(workspace: Path, source: str) -> None:
    """Raise UserError (exit 2) unless ``workspace`` exists as a writable folder or can be made."""
    workspace = Path(workspace).absolute()
    if workspace.exists():
        if not workspace.is_dir():
            raise UserError(f"{source}: workspace: {workspace} exists and is not a folder")
        if not os.access(workspace, os.W_OK | os.X_OK):
            raise UserError(f"{source}: workspace: {workspace} is not writable")
        existing = workspace
    else:
        existing = workspace.parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"{source}: workspace: cannot create {workspace}: {existing} is not a writable folder")
    kind = file_system_type(existing)
    if kind in PSEUDO_FILE_SYSTEMS:
        raise UserError(f"{source}: workspace: {workspace} is on a {kind} pseudo file system, which keeps no files; "
                        "choose a folder on a disk")
    if workspace.is_dir():
        check_stores(workspace, writing=True)
        refuse_linked_folders(workspace)


def refuse_linked_folders(workspace: Path) -> None:
    """UserError (exit 2) naming the first of the workspace's own folders that is a symbolic link or not a
    folder: a command would otherwise read, write or move files outside the workspace through it."""
    for name in OWN_FOLDERS:
        try:
            os.close(open_folder(Path(workspace) / name, Path(workspace)))
        except FileNotFoundError:
            continue
        except LinkedFolder as error:
            raise UserError(str(error.strerror)) from None


def require_workspace(workspace: Path, writing: bool = False) -> Path:
    """Raise UserError (exit 2) unless ``workspace`` holds a sound prunesweep ledger (and, for a
    ``writing`` command, one the user may write); see :func:`~.store_health.check_stores`."""
    workspace = Path(workspace)
    if not (workspace / LEDGER_FILE).exists():
        if (workspace / STAGES_DIR).is_dir():
            raise UserError(f"{workspace / LEDGER_FILE}: is missing; run `prunesweep repair {workspace}` to rebuild "
                            "it from the stage folders")
        raise UserError(f"{workspace}: not a prunesweep workspace (no {LEDGER_FILE}); launch a sweep into it first")
    check_stores(workspace, writing)
    refuse_linked_folders(workspace)
    return workspace


def existing_captures(workspace: Path):
    """A function: dense key -> the rewind iterations its existing folder captures, or None."""

    def captured(key: str) -> Optional[list[int]]:
        path = stage_dir(workspace, key) / STAGE_FILE
        if not path.exists():
            return None
        try:
            config = read_stage(path.parent).get("config")
        except MalformedStageFile as error:
            raise UserError(str(error)) from None
        captures = config.get("capture_iterations", []) if isinstance(config, dict) else None
        if not isinstance(captures, list):
            raise UserError(f"{path}: config.capture_iterations is not a list; run `prunesweep repair {workspace}` "
                            "to move it aside and write it again from the sweep")
        return list(captures)

    return captured


def materialise(workspace: Path, stages: list[Stage]) -> None:
    """Write each new stage's folder and ``stage.json``; existing folders are left as they are
    (a damaged ``stage.json`` among them is UserError naming it and the repair, and then nothing
    is written).

    The new files are made durable together (:func:`workers.stages.artifacts.atomic_write_new_files`:
    two file-system syncs, not one fsync per stage), and every one is on disk when this
    returns, before the ledger records the stages. A ``stage.json`` that exists is complete:
    it was renamed into place after its content was synced.
    """
    (Path(workspace) / STAGES_DIR).mkdir(parents=True, exist_ok=True)
    new = []
    for stage in stages:
        folder = stage_dir(workspace, stage.key)
        path = folder / STAGE_FILE
        if not os.path.exists(path):
            new.append((path, _stage_file(stage)))
        else:
            try:
                read_stage(folder)
            except MalformedStageFile as error:
                raise UserError(str(error)) from None
    atomic_write_new_files(new, Path(workspace))


def stage_record_problem(stage: Any, folder: str) -> Optional[str]:
    """What makes a parsed ``stage.json`` unfit to describe the stage of folder ``folder``, or None.

    Checked like user input: a mapping whose ``key`` is its folder's name, whose ``kind`` and
    ``identity`` hash to that name (:func:`~orchestrator.planning.stage_identity.stage_key`: a
    description copied from another folder or edited is not this stage's), with a ``config``
    mapping and ``deps`` naming sibling stage folders.
    """
    if not isinstance(stage, dict):
        return f"{STAGE_FILE} is unreadable or not a mapping"
    if stage.get("key") != folder:
        return f"{STAGE_FILE} names the stage {str(stage.get('key'))[:80]!r}, not its folder {folder!r}"
    if not isinstance(stage.get("kind"), str) or not isinstance(stage.get("config"), dict):
        return f"{STAGE_FILE} has no 'kind' text and 'config' mapping"
    identity = stage.get("identity")
    try:
        named = stage_key(stage["kind"], identity) if isinstance(identity, dict) else None
    except (TypeError, ValueError, RecursionError):
        named = None
    if named != folder:
        return f"{STAGE_FILE} has a kind and identity that are not those of the stage {folder!r}"
    deps = stage.get("deps", {})
    if not isinstance(deps, dict) or not all(isinstance(dep, str) and dep not in ("", ".", "..") and "/" not in dep
                                             and "\0" not in dep for dep in deps.values()):
        return f"{STAGE_FILE} has a 'deps' that is not a mapping of role to stage"
    return None


def stage_file_problem(folder: Path) -> Optional[str]:
    """What makes the ``stage.json`` of ``folder`` unfit to run its stage, or None.

    Read without following a symbolic link or waiting on a FIFO, at most
    :data:`MAX_STAGE_FILE_BYTES`, then checked by :func:`stage_record_problem`.
    """
    from workers.stages.workspace_files import FileTooLarge, read_bytes

    try:
        data = read_bytes(Path(folder) / STAGE_FILE, limit=MAX_STAGE_FILE_BYTES)
    except FileNotFoundError:
        return f"{STAGE_FILE} is missing"
    except FileTooLarge:
        return f"{STAGE_FILE} is longer than {MAX_STAGE_FILE_BYTES} bytes"
    except NotARegularFile:
        link = (Path(folder) / STAGE_FILE).is_symlink()
        return f"{STAGE_FILE} is a symbolic link" if link else f"{STAGE_FILE} is not a regular file"
    except OSError:
        return f"{STAGE_FILE} cannot be read"
    try:
        stage = json.loads(data)
    except (ValueError, RecursionError):
        return f"{STAGE_FILE} is not JSON"
    return stage_record_problem(stage, Path(folder).name)


def rewrite_stage_file(workspace: Path, stage: Stage) -> None:
    """Replace the ``stage.json`` of ``stage``'s folder with what its plan says (atomically; a link or
    any other file in its place is replaced, never followed)."""
    atomic_write_bytes(stage_dir(workspace, stage.key) / STAGE_FILE, _stage_file(stage))


def _stage_file(stage: Stage) -> bytes:
    """``stage.json``'s bytes: :meth:`Stage.to_json` as one line of key-sorted JSON.

    Built without ``to_json``'s deep copy (made for callers that change the mapping) and
    without indentation, which json encodes in pure Python: together most of the CPU time
    of writing tens of thousands of folders (issue 16).
    """
    return json_file_bytes({"kind": stage.kind, "key": stage.key, "label": stage.label,
                            "identity": dict(stage.identity), "config": dict(stage.config), "deps": dict(stage.deps)},
                           indent=None)


class WorkspaceLock:
    """An exclusive lock on a workspace, held by one launch/resume at a time.

    ``flock`` is released by the kernel when its holder dies, so a lock left behind by a
    killed process is simply free again; the file's content names the live holder.
    """

    def __init__(self, workspace: Path):
        self.path = Path(workspace) / WORKSPACE_LOCK_FILE
        self.handle: Optional[IO[str]] = None

    def acquire(self) -> WorkspaceLock:
        """Take the lock or raise WorkspaceBusy naming its holder."""
        try:
            handle = open_regular(self.path, append=False)
        except NotARegularFile as error:
            raise UserError(error.strerror) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = self._describe_holder(*read_record(handle.fileno(), _TEXTS))
            handle.close()
            raise WorkspaceBusy(f"{self.path.parent}: already {who}; wait for it to finish or stop it, then run "
                                "`prunesweep resume`") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(),
                                 "command": "prunesweep " + " ".join(sys.argv[1:2])}))
        handle.flush()
        self.handle = handle
        return self

    def holder(self) -> Optional[dict]:
        """Who holds the lock now (host, pid, since), or None when it is free."""
        try:  # read-only and without writing: a reading command may not own the workspace
            fd = open_file(self.path)[0]
        except FileNotFoundError:
            return None
        except OSError as error:
            raise UserError(f"{self.path}: cannot read the workspace lock ({error.strerror}); remove it if it "
                            "is a symbolic link, then run the command again") from None
        with os.fdopen(fd) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                fields, damage = read_record(handle.fileno(), _TEXTS)
                return {"message": self._describe_holder(fields, damage), **fields}
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

    def _describe_holder(self, fields: dict, damage: str) -> str:
        """``in use by prunesweep resume (pid 12 on host node7, since ...)``: the holder's record, checked like
        input (:func:`workers.stages.lock.read_record`)."""
        if damage:
            return f"in use by another process (its lock record {self.path} is damaged: {damage})"
        return (f"in use by {fields.get('command', 'another prunesweep')} (pid {fields.get('pid', '?')} on host "
                f"{fields.get('host', '?')}, since {describe_since(fields.get('since'))})")

    def release(self) -> None:
        """Let go of the lock."""
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def __enter__(self) -> WorkspaceLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
