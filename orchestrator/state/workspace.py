"""A workspace folder: its stage folders, its lock, and checks before anything is written.

Layout::

    WORKSPACE/
      ledger.sqlite        stage states, sweeps, cells (orchestrator.state.ledger)
      results.sqlite       the central results table (results.table)
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
from typing import IO, Optional

from orchestrator.errors import UserError, WorkspaceBusy
from orchestrator.planning.stage_identity import Stage
from orchestrator.state.ledger import LEDGER_FILE
from orchestrator.state.store_health import check_stores
from workers.stages.artifacts import STAGE_FILE, MalformedStageFile, json_file_bytes, read_stage
from workers.stages.new_files import atomic_write_new_files
from workers.stages.workspace_files import LinkedFolder, NotARegularFile, open_file, open_folder, open_regular

STAGES_DIR = "stages"
LOCK_FILE = ".lock"


def stage_dir(workspace: Path, key: str) -> Path:
    """The folder of one stage."""
    return Path(workspace) / STAGES_DIR / key


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


#: the workspace's own folders: each must be a real folder (a link there is refused, never followed).
OWN_FOLDERS = (STAGES_DIR, "quarantine", "sweeps", "slurm", "ray")


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
        if (workspace / "stages").is_dir():
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
        self.path = Path(workspace) / LOCK_FILE
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
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
            raise WorkspaceBusy(
                f"{self.path.parent}: already in use by {holder.get('command', 'another prunesweep')} "
                f"(pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {since}); "
                "wait for it to finish or stop it, then run `prunesweep resume`"
            ) from None
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
                try:
                    holder = json.loads(handle.read() or "{}")
                except ValueError:
                    holder = {}
                return {"message": f"in use by {holder.get('command', 'another prunesweep')} (pid "
                                   f"{holder.get('pid', '?')} on host {holder.get('host', '?')})", **holder}
            fcntl.flock(handle, fcntl.LOCK_UN)
        return None

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
