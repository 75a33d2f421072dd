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

Every write goes through :func:`atomic_write_bytes` (temp file in the same folder,
fsync, rename), so a crash leaves either the old file or the new one, never half of one.
In a distributed stage only rank 0 writes (:func:`workers.training.distributed.is_writer`): the
other ranks compute the same files and skip every write.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, NamedTuple, Optional

from workers.training.distributed import is_writer

STAGE_FILE = "stage.json"
DONE_FILE = "DONE.json"
CHECKPOINT_FILE = "checkpoint.pt"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.json"


#: the names of our temp files (``tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp")``, as here and in
#: ``results/atomic_files.py``): a writer killed before its rename leaves one behind.
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

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


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of killed writers directly in ``folder``; return their paths.

    Only regular files named as our temp files are removed, never through a symbolic
    link (a link named like one is left alone). The caller makes sure no writer of ours
    is still at work in ``folder``.
    """
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            removed.append(Path(entry.path))
    return removed


class CorruptArtifact(RuntimeError):
    """A dependency's artifact is missing or does not match its recorded checksum."""

    def __init__(self, stage_dir: Path, reason: str):
        super().__init__(f"{stage_dir.name}: {reason}")
        self.stage_dir = stage_dir
        self.reason = reason


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename)."""
    _atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    atomic_write_bytes(path, json_file_bytes(obj))


def json_file_bytes(obj: Any, indent: int | None = 2) -> bytes:
    """The bytes :func:`atomic_write_json` writes for ``obj`` (indented, key-sorted JSON);
    ``indent=None``: one line, encoded by json's C encoder (several times faster)."""
    separators = None if indent is not None else (", ", ": ")
    return (json.dumps(obj, indent=indent, sort_keys=True, separators=separators) + "\n").encode()


def atomic_write_new_files(files: Iterable[tuple[Path, bytes]]) -> None:
    """Write many small files atomically with two file-system syncs instead of one fsync each.

    Every file is first written to ``.<name>.tmp`` beside it (created with the user's umask,
    never through a symbolic link); one sync of the file system makes all their contents
    durable; then each is renamed into place and a second sync makes the renames durable.
    A crash at any point leaves each path absent or complete, never half written, and
    returning means every file is on disk: a caller records them as written only after.
    Made for ``launch`` writing tens of thousands of ``stage.json`` (issue 16); the temp name
    is fixed, so the caller must be the only writer of these folders (the workspace lock),
    and a temp file left by a killed run is simply overwritten by the next.
    """
    if not is_writer():
        return
    staged: list[tuple[str, str]] = []
    try:
        for path, data in files:
            final = os.fspath(path)
            parent, name = os.path.split(final)
            try:
                os.mkdir(parent)
            except FileExistsError:
                pass
            except FileNotFoundError:
                os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".{name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            staged.append((tmp, final))
        if not staged:
            return
        folders = {os.path.dirname(final) for _, final in staged}
        _sync_file_systems(folders)  # the contents first: a rename must never outlive its data
        for tmp, final in staged:
            os.replace(tmp, final)
        staged = []
        _sync_file_systems(folders)
    except BaseException:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        raise


def _sync_file_systems(folders: Iterable[str]) -> None:
    """Flush the file system(s) holding ``folders`` (Linux ``syncfs``, else a global ``sync``)."""
    seen: dict[int, str] = {}
    for folder in folders:
        seen.setdefault(os.stat(folder).st_dev, folder)
    import ctypes

    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    for folder in seen.values():
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
        try:
            if syncfs is None or syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)


def atomic_save_with(path: Path, save: Callable[[Any], None]) -> None:
    """Atomically write ``path`` with a writer such as ``lambda f: torch.save(obj, f)``."""
    _atomic_write(path, save)


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    if not is_writer():  # a rank other than 0 of a distributed stage: rank 0 writes the same
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        if error.errno in SPACE_ERRNOS:
            raise DiskFull(path, error) from error
        raise
    try:
        os.fchmod(fd, 0o666 & ~process_umask())  # mkstemp makes 0600; a lab's shared workspace needs the umask
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if not isinstance(error, DiskFull) and out_of_space(error, path):
            raise DiskFull(path, error) from error
        raise


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's content."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _sha256(fd)
    finally:
        os.close(fd)


class MalformedStageFile(ValueError):
    """A ``stage.json`` that is not JSON or not a mapping: names the file and the repair."""


def read_stage(stage_dir: Path) -> dict:
    """Read a stage folder's ``stage.json``; :class:`MalformedStageFile` naming it when it is damaged."""
    path = Path(stage_dir) / STAGE_FILE
    try:
        stage = json.loads(path.read_text())
    except UnicodeDecodeError as error:
        stage = error
    except ValueError as error:
        stage = error
    except RecursionError:
        stage = ValueError("nested too deep")
    if not isinstance(stage, dict):
        why = stage if isinstance(stage, ValueError) else f"a {type(stage).__name__}, not a mapping"
        workspace = Path(stage_dir).absolute().parent.parent
        raise MalformedStageFile(f"{path}: not a stage's description ({why}); run `prunesweep repair {workspace}` "
                                 "to move it aside and write it again from the sweep")
    return stage


def write_done(stage_dir: Path, files: list[str], metrics: Mapping[str, Any]) -> dict:
    """Checksum ``files`` (names inside ``stage_dir``) and write ``DONE.json`` last."""
    stage_dir = Path(stage_dir)
    manifest = {
        "files": {
            name: {"sha256": sha256_of(stage_dir / name), "size": (stage_dir / name).stat().st_size}
            for name in sorted(set(files))
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
        data, done_stat = _read_regular(os.path.join(folder, DONE_FILE))
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
            digest, info = _digest_regular(os.path.join(folder, name), record["size"])
        except FileNotFoundError:
            return DoneCheck(False, f"{name} is missing", None, {})
        except NotARegularFile as error:
            return DoneCheck(False, f"{name} {error.strerror}", None, {})
        except _WrongSize as error:
            return DoneCheck(False, f"{name} has size {error.args[0]}, expected {record['size']}", None, {})
        if digest != record["sha256"]:
            return DoneCheck(False, f"{name} does not match its checksum", None, {})
        stats[name] = info
    return DoneCheck(True, "", manifest, stats)


class _WrongSize(Exception):
    """A file whose size differs from its manifest's (the argument: its actual size)."""


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` for reading without following a final symbolic link; its descriptor and stat."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFile(errno.ELOOP, "is a symbolic link, which no stage writes") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "is not a regular file")
    return fd, info


def _read_regular(path: str) -> tuple[bytes, os.stat_result]:
    """The content and stat of a regular file, read without following a symbolic link."""
    fd, info = _open_regular(path)
    try:
        return b"".join(_blocks(fd)), info
    finally:
        os.close(fd)


def _digest_regular(path: str, size: int) -> tuple[str, os.stat_result]:
    """Hex sha256 and stat of a regular file of ``size`` bytes (:class:`_WrongSize` otherwise)."""
    fd, info = _open_regular(path)
    try:
        if info.st_size != size:
            raise _WrongSize(info.st_size)
        return _sha256(fd), info
    finally:
        os.close(fd)


def _sha256(fd: int) -> str:
    """Hex sha256 of what is left to read of an open file."""
    digest = hashlib.sha256()
    for block in _blocks(fd):
        digest.update(block)
    return digest.hexdigest()


def _blocks(fd: int) -> Iterator[bytes]:
    """The content of an open file, a MiB at a time (plain reads: most stage files are small)."""
    while block := os.read(fd, 1 << 20):
        yield block


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
    from workers.stages.files import required_files

    try:
        with open(os.path.join(stage_dir, STAGE_FILE), "rb") as handle:
            stage = json.loads(handle.read())
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
        listed = json.loads((stage_dir / DONE_FILE).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError, RecursionError):
        listed = {}
    if not isinstance(listed, (dict, list)):  # a damaged manifest lists nothing to remove
        listed = {}
    (stage_dir / DONE_FILE).unlink(missing_ok=True)
    (stage_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    for name in listed:
        if isinstance(name, str) and Path(name).name == name and name not in (".", ".."):  # plain names only
            (stage_dir / name).unlink(missing_ok=True)


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


class NotARegularFile(OSError):
    """A path we read or write is a symbolic link or not a regular file: we do not follow or replace it."""


def open_regular(path: Path, append: bool = True) -> IO[str]:
    """Open ``path`` for text writing (created with the umask), never through a symbolic link.

    ``append``: writes go to the end (a log); else the file is opened read-write at its start
    (a lock file). A symbolic link or anything but a regular file at ``path`` raises
    :class:`NotARegularFile` naming it: a colleague's link in a shared workspace must not make
    us write into a file outside it.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFile(error.errno, f"{path} is a symbolic link; prunesweep does not follow links it "
                                               "did not create: remove it and run the command again") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, f"{path} is not a regular file; remove it and run the command again")
    return os.fdopen(fd, "a+" if append else "r+", encoding="utf-8")
