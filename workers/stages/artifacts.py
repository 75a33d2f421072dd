"""The on-disk contract of one stage folder.

A stage folder holds:

- ``stage.json``  what to compute: ``kind``, ``key``, ``identity`` (what was hashed),
  ``config`` (everything the worker needs) and ``deps`` (role -> folder name of a
  sibling stage whose artifacts are inputs);
- ``checkpoint.pt`` the last epoch checkpoint of a training in progress;
- ``log.txt`` what the worker printed;
- the stage's artifacts (``final.pt``, ``mask.pt``, ``rewind_<k>.pt``, ``metrics.json`` ...);
- ``DONE.json`` written last: the name, size and sha256 of every artifact plus the
  stage's metrics. A stage is done exactly when ``DONE.json`` exists and every file it
  lists still has its recorded size and checksum.

Every read and write goes through :mod:`workers.stages.workspace_files` (no link followed, no
FIFO waited on, bounded reads; writes to a temp file in the same folder, fsync, rename), so a
crash leaves either the old file or the new one, never half of one.
In a distributed stage only rank 0 writes (:func:`workers.training.distributed.is_writer`): the
other ranks compute the same files and skip every write.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, Optional

from workers.stages.disk_space import SPACE_ERRNOS as SPACE_ERRNOS
from workers.stages.disk_space import DiskFull as DiskFull
from workers.stages.disk_space import free_space as free_space
from workers.stages.disk_space import out_of_space as out_of_space
from workers.stages.disk_space import process_umask as process_umask
from workers.stages.new_files import atomic_write_new_files as atomic_write_new_files
from workers.stages.paths import CHECKPOINT_FILE, DONE_FILE, METRICS_FILE, STAGE_FILE, required_files
from workers.stages.paths import LOG_FILE as LOG_FILE  # still imported from here by orchestrator.backends.ray.ranks
from workers.stages.workspace_files import TEMP_NAME as TEMP_NAME
from workers.stages.workspace_files import NotARegularFile as NotARegularFile
from workers.stages.workspace_files import SizeMismatch, digest, read_json, read_with_stat
from workers.stages.workspace_files import atomic_save_with as atomic_save_with
from workers.stages.workspace_files import atomic_write_bytes as atomic_write_bytes
from workers.stages.workspace_files import open_regular as open_regular
from workers.stages.workspace_files import remove_temp_files as remove_temp_files


class CorruptArtifact(RuntimeError):
    """A dependency's artifact is missing or does not match its recorded checksum."""

    def __init__(self, stage_dir: Path, reason: str):
        super().__init__(f"{stage_dir.name}: {reason}")
        self.stage_dir = stage_dir
        self.reason = reason


def sha256_of(path: Path) -> str:
    """Hex sha256 of a regular file's content (never through a symbolic link)."""
    return digest(path)[0]


def json_file_bytes(obj: Any, indent: Optional[int] = 2) -> bytes:
    """The bytes :func:`atomic_write_json` writes for ``obj`` (indented, key-sorted JSON);
    ``indent=None``: one line, encoded by json's C encoder (several times faster)."""
    separators = None if indent is not None else (", ", ": ")
    return (json.dumps(obj, indent=indent, sort_keys=True, separators=separators) + "\n").encode()


def atomic_write_json(path: Path, obj: Any, root: Optional[Path] = None) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, json_file_bytes(obj), root)


class MalformedStageFile(ValueError):
    """A ``stage.json`` that is not JSON or not a mapping: names the file and the repair."""


def read_stage(stage_dir: Path) -> dict:
    """Read a stage folder's ``stage.json``; :class:`MalformedStageFile` naming it when it is damaged."""
    path = Path(stage_dir) / STAGE_FILE
    try:
        stage = read_json(path)
    except (ValueError, NotARegularFile) as error:  # a link or a FIFO is no stage's description either
        stage = error
    except RecursionError:
        stage = ValueError("nested too deep")
    if not isinstance(stage, dict):
        why = (stage.strerror if isinstance(stage, OSError) else stage if isinstance(stage, ValueError)
               else f"a {type(stage).__name__}, not a mapping")
        workspace = Path(stage_dir).absolute().parent.parent
        raise MalformedStageFile(f"{path}: not a stage's description ({why}); run `prunesweep repair {workspace}` "
                                 "to move it aside and write it again from the sweep")
    return stage


def write_done(stage_dir: Path, files: list[str], metrics: Mapping[str, Any]) -> dict:
    """Checksum ``files`` (names inside ``stage_dir``) and write ``DONE.json`` last."""
    stage_dir = Path(stage_dir)
    manifest = {
        "files": {
            name: {"sha256": hashed, "size": info.st_size}
            for name in sorted(set(files)) for hashed, info in [digest(stage_dir / name)]
        },
        "metrics": dict(metrics),
    }
    atomic_write_json(stage_dir / DONE_FILE, manifest)
    return manifest


class DoneCheck(NamedTuple):
    """What :func:`inspect_done` found in a stage folder."""

    #: whether the stage is done: its manifest is valid and every file it lists matches it.
    ok: bool
    #: why not: ``"not run"`` without a manifest, else what is damaged; empty when ``ok``.
    reason: str
    #: the parsed ``DONE.json`` when ``ok``, else None.
    manifest: Optional[dict]
    #: ``name -> os.stat_result`` of ``DONE.json`` and every listed file as they were read
    #: (taken from the open files, so they describe exactly the bytes hashed); empty unless ``ok``.
    stats: dict[str, os.stat_result]


def verify_done(stage_dir: Path | str) -> tuple[bool, str]:
    """Tell whether a stage is done: ``(True, "")`` or ``(False, reason)``.

    The reason is ``"not run"`` when there is no manifest at all; anything else means
    the stage ran but its artifacts are damaged and it must be rerun.
    """
    check = inspect_done(stage_dir)
    return check.ok, check.reason


def inspect_done(stage_dir: Path | str) -> DoneCheck:
    """Check a stage folder's manifest and checksum every file it lists, each read once.

    No symbolic link is followed: a stage writes regular files only, so a manifest or an
    artifact that is a link (planted, or left by a hand copy) makes the stage not done.
    """
    folder = os.fspath(stage_dir)
    try:
        data, done_stat = read_with_stat(os.path.join(folder, DONE_FILE))
    except FileNotFoundError:
        return DoneCheck(False, "not run", None, {})
    except NotARegularFile as error:
        return DoneCheck(False, f"{DONE_FILE} {error.strerror}", None, {})
    except OSError:
        return DoneCheck(False, f"{DONE_FILE} is unreadable", None, {})
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        return DoneCheck(False, f"{DONE_FILE} is unreadable", None, {})
    problem = manifest_problem(manifest) or _missing_required(folder, manifest)
    if problem:
        return DoneCheck(False, f"{DONE_FILE} {problem}", None, {})
    stats = {DONE_FILE: done_stat}
    for name, record in manifest["files"].items():
        try:
            hashed, info = digest(os.path.join(folder, name), record["size"])
        except FileNotFoundError:
            return DoneCheck(False, f"{name} is missing", None, {})
        except NotARegularFile as error:
            return DoneCheck(False, f"{name} {error.strerror}", None, {})
        except SizeMismatch as error:
            return DoneCheck(False, f"{name} has size {error.args[0]}, expected {record['size']}", None, {})
        if hashed != record["sha256"]:
            return DoneCheck(False, f"{name} does not match its checksum", None, {})
        stats[name] = info
    return DoneCheck(True, "", manifest, stats)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def manifest_problem(manifest: Any) -> str | None:
    """What makes a parsed ``DONE.json`` unacceptable, or None.

    A manifest must list at least the stage's metrics file, each name a plain file name
    inside the stage folder (no ``/``, ``..`` or the manifest itself), each with its size
    and sha256, and hold the metrics as a mapping: an empty, malformed or outside-pointing
    manifest never makes a stage done.
    """
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return "is not a mapping with a 'files' mapping"
    if not isinstance(manifest.get("metrics"), dict):
        return "has no 'metrics' mapping"
    files = manifest["files"]
    if METRICS_FILE not in files:
        return f"does not list {METRICS_FILE}"
    for name, record in files.items():
        if not name or "/" in name or "\0" in name or name in (".", "..", DONE_FILE):
            return f"lists {name[:80]!r}, which is not a file of the stage folder"
        if not (isinstance(record, dict) and type(record.get("size")) is int and record["size"] >= 0
                and isinstance(record.get("sha256"), str) and _SHA256.match(record["sha256"])):
            return f"has no valid size and sha256 for {name!r}"
    return None


def _missing_required(stage_dir: Path | str, manifest: dict) -> str | None:
    """What the manifest leaves out of the files its stage's kind must produce, or None.

    Judged from ``stage.json``; without a readable one the kind is unknown and only the
    metrics file (checked by :func:`manifest_problem`) is required.
    """
    try:
        stage = read_json(os.path.join(stage_dir, STAGE_FILE))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
        return None
    if not isinstance(stage, dict):
        return None
    missing = sorted(required_files(stage.get("kind"), stage.get("config")) - set(manifest["files"]))
    if missing:
        return f"does not list {', '.join(missing)}, which a {stage.get('kind')} stage produces"
    return None


def read_done(stage_dir: Path) -> dict:
    """Return a verified stage's manifest; raise :class:`CorruptArtifact` otherwise."""
    check = inspect_done(stage_dir)
    if not check.ok:
        raise CorruptArtifact(Path(stage_dir), check.reason)
    assert check.manifest is not None
    return check.manifest


def invalidate(stage_dir: Path) -> None:
    """Discard a damaged stage: its manifest, every artifact it lists and its checkpoint.

    Everything is recomputed from scratch: an artifact the stage would otherwise keep
    (a captured ``rewind_<k>.pt`` is never rewritten once it exists) cannot survive damaged.
    """
    stage_dir = Path(stage_dir)
    try:
        listed = read_json(stage_dir / DONE_FILE).get("files", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        listed = {}
    if not isinstance(listed, (dict, list)):  # a damaged manifest lists nothing to remove
        listed = {}
    (stage_dir / DONE_FILE).unlink(missing_ok=True)
    (stage_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    for name in listed:
        if (isinstance(name, str) and "\x00" not in name and Path(name).name == name
                and name not in (".", "..")):  # plain names only
            (stage_dir / name).unlink(missing_ok=True)
