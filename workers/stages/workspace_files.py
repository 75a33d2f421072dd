"""Every file inside a workspace is opened, read, written and renamed here, one safe way (issue 25):
whoever may write into a shared workspace can plant a link, a FIFO, a huge file or a folder there.

- no symbolic link is followed: the last name is opened with ``O_NOFOLLOW``, and given the
  ``root`` (the workspace), every folder from it down to the file is opened below the one before
  (``openat``), each with ``O_NOFOLLOW``: a linked folder is :class:`LinkedFolder`, never entered;
- only regular files are read: opened ``O_NONBLOCK`` (a FIFO never blocks), then ``fstat``;
  anything else is :class:`NotARegularFile`;
- what is parsed or shown is bounded (:data:`RECORD_LIMIT`, :data:`TAIL_LIMIT`);
- a write is atomic: a new temp file with a unique name beside the target, fsync, rename;
  files get the user's umask;
- what must never be overwritten gets a name of its own (:func:`make_unique_folder`) or is
  moved without replacing anything (:func:`move_within`).

Many new files at once: :mod:`workers.stages.new_files`. ``tests/unit/test_workspace_files.py``
fails when code elsewhere (bar a short, commented allow-list) opens, reads, writes or renames a path.
"""
from __future__ import annotations

import ctypes
import errno
import functools
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Optional, Union

from workers.stages.disk_space import SPACE_ERRNOS, DiskFull, out_of_space, process_umask
from workers.training.distributed import is_writer

PathArg = Union[str, "os.PathLike[str]"]
#: the most bytes read of a file that is parsed (stage.json, DONE.json, locks, records): far above any we write.
RECORD_LIMIT = 32 << 20
#: the most bytes read from the end of a log to show its last lines.
TAIL_LIMIT = 64 << 10
#: the names of our temp files (``.NAME.XXXXXXXX.tmp``, as ``results/atomic_files.py``'s too): a writer
#: killed before its rename leaves one behind.
TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_TEMP_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RENAME_NOREPLACE = 1


class NotARegularFile(OSError):
    """A path we read or write is a symbolic link or not a regular file: we do not follow or replace it."""


class LinkedFolder(NotARegularFile):
    """A folder between a workspace and one of its files is a symbolic link, or not a folder."""


class FileTooLarge(OSError):
    """A file larger than any prunesweep writes there: not parsed or shown."""


class SizeMismatch(Exception):
    """A file whose size differs from the one expected (the argument: its actual size)."""


def unreadable(path: PathArg, error: OSError) -> str:
    """One phrase naming ``path`` and why it was not read (a link, not a regular file, too large, ...)."""
    if isinstance(error, LinkedFolder):
        return str(error.strerror)
    return f"{path} {error.strerror}" if isinstance(error, (NotARegularFile, FileTooLarge)) else \
        f"{path} cannot be read ({error.strerror})"


# --------------------------------------------------------------------------- folders


def _parts(path: PathArg, root: PathArg) -> list[str]:
    """The names from ``root`` down to ``path`` (empty for ``root`` itself); ValueError when outside it."""
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative == os.curdir:
        return []
    if relative.split(os.sep)[0] == os.pardir:
        raise ValueError(f"{path} is not inside {root}")
    return relative.split(os.sep)


def enter_folder(fd: int, name: str, where: Path, create: bool = False) -> int:
    """The descriptor of folder ``name`` in the open folder ``fd`` (made when ``create``), never through a link."""
    if create:
        try:
            os.mkdir(name, 0o777, dir_fd=fd)
        except FileExistsError:
            pass
    try:
        return os.open(name, _FOLDER, dir_fd=fd)
    except OSError as error:
        if error.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise OSError(error.errno, error.strerror, str(where)) from None
    try:
        link = stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        link = False
    raise LinkedFolder(errno.ELOOP if link else errno.ENOTDIR,
                       f"{where} is {'a symbolic link' if link else 'not a folder'}; prunesweep follows no link "
                       "inside a workspace (nothing was read or written through it): remove it and run the command "
                       "again",
                       str(where))


def open_folder(folder: PathArg, root: Optional[PathArg], create: bool = False) -> int:
    """A descriptor of ``folder``; with ``root``, every folder below ``root`` is entered without following a link."""
    if root is None:
        if create:
            os.makedirs(folder, exist_ok=True)
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the workspace as the user named it
    where = Path(root)
    try:
        for name in _parts(folder, root):
            where = where / name
            inner = enter_folder(fd, name, where, create)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _parent(path: PathArg, root: Optional[PathArg], create: bool = False) -> tuple[int, str]:
    """A descriptor of ``path``'s folder (see :func:`open_folder`) and its last name."""
    folder, name = os.path.split(os.path.abspath(path))
    if root is not None and not _parts(path, root):
        raise ValueError(f"{path} is the workspace itself, not a file in it")
    return open_folder(folder, root, create), name


def list_folder(folder: PathArg, root: Optional[PathArg] = None) -> list[tuple[str, bool]]:
    """``(name, is a folder)`` of every entry of ``folder``, sorted; no link is followed (a linked
    ``folder`` is :class:`LinkedFolder`, a linked entry is not a folder). Empty when it does not exist."""
    try:
        fd = open_folder(folder, root if root is not None else os.path.dirname(os.path.abspath(folder)))
    except FileNotFoundError:
        return []
    try:
        with os.scandir(fd) as entries:
            return sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries)
    finally:
        os.close(fd)


def make_unique_folder(folder: PathArg, name: str, root: Optional[PathArg] = None) -> Path:
    """Make and return a new folder ``folder/name`` (``name.2``, ``name.3``, ... when taken): never one that exists."""
    fd = open_folder(folder, root, create=True)
    try:
        for number in range(1, 10_000):
            candidate = name if number == 1 else f"{name}.{number}"
            try:
                os.mkdir(candidate, 0o777, dir_fd=fd)
            except FileExistsError:
                continue
            return Path(folder) / candidate
    finally:
        os.close(fd)
    raise FileExistsError(errno.EEXIST, "no free name left", str(Path(folder) / name))


def move_within(source: PathArg, target: PathArg, root: PathArg) -> None:
    """Rename ``source`` (a file, a link or a folder) to ``target``, both inside ``root``, following no
    link on the way to either, making ``target``'s missing folders, never replacing one (FileExistsError)."""
    source_folder, source_name = _parent(source, root)
    try:
        target_folder, target_name = _parent(target, root, create=True)
        try:
            _rename_without_replacing(source_folder, source_name, target_folder, target_name)
        finally:
            os.close(target_folder)
    finally:
        os.close(source_folder)


_libc = functools.lru_cache(maxsize=1)(lambda: ctypes.CDLL(None, use_errno=True))


def _rename_without_replacing(source_folder: int, source: str, target_folder: int, target: str) -> None:
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is not None:
        if renameat2(source_folder, os.fsencode(source), target_folder, os.fsencode(target), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.ENOSYS, errno.EINVAL):
            raise OSError(code, os.strerror(code), source)
    # no renameat2 (an old kernel or C library, some network file systems): look, then rename
    try:
        os.stat(target, dir_fd=target_folder, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(source, target, src_dir_fd=source_folder, dst_dir_fd=target_folder)
        return
    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), target)


def remove_temp_files(folder: PathArg, root: Optional[PathArg] = None) -> list[Path]:
    """Delete the temp files of killed writers directly in ``folder``; return their paths.

    Only regular files named as our temp files are removed, never through a symbolic link (a
    link named like one is left alone). The caller makes sure no writer of ours is at work there.
    """
    try:
        fd = open_folder(folder, root if root is not None else os.path.dirname(os.path.abspath(folder)))
    except (FileNotFoundError, NotARegularFile):
        return []
    removed = []
    try:
        with os.scandir(fd) as entries:
            names = [entry.name for entry in entries
                     if TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False)]
        for name in names:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            removed.append(Path(folder) / name)
    finally:
        os.close(fd)
    return removed


# --------------------------------------------------------------------------- reading


def open_file(path: PathArg, root: Optional[PathArg] = None) -> tuple[int, os.stat_result]:
    """Open the regular file ``path`` to read: its descriptor (close it) and stat. Never blocks;
    a link, a FIFO, a device or a folder is :class:`NotARegularFile`."""
    folder, name = _parent(path, root)
    try:
        fd = os.open(name, _READ, dir_fd=folder)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENXIO):
            why = "is a symbolic link, which no stage writes" if error.errno == errno.ELOOP else "is not a regular file"
            raise NotARegularFile(error.errno, why, str(path)) from None
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        os.close(folder)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, "is not a regular file", str(path))
    return fd, info


@contextmanager
def reading(path: PathArg, root: Optional[PathArg] = None) -> Iterator[IO[bytes]]:
    """A binary handle of the regular file ``path`` (see :func:`open_file`), e.g. for ``torch.load``."""
    fd, _ = open_file(path, root)
    with os.fdopen(fd, "rb") as handle:
        yield handle


def read_with_stat(path: PathArg, root: Optional[PathArg] = None,
                   limit: int = RECORD_LIMIT) -> tuple[bytes, os.stat_result]:
    """The content of the regular file ``path`` (:class:`FileTooLarge` beyond ``limit`` bytes) and the
    stat of the open file (it describes exactly the bytes read)."""
    fd, info = open_file(path, root)
    try:
        chunks, read = [], 0
        while info.st_size <= limit and read <= limit and (block := os.read(fd, min(limit + 1 - read, 1 << 20))):
            chunks.append(block)
            read += len(block)
        if info.st_size > limit or read > limit:
            raise FileTooLarge(errno.EOVERFLOW, f"is larger than {limit} bytes, more than prunesweep writes there",
                               str(path))
        return b"".join(chunks), info
    finally:
        os.close(fd)


def read_bytes(path: PathArg, root: Optional[PathArg] = None, limit: int = RECORD_LIMIT) -> bytes:
    """The content of the regular file ``path`` (see :func:`read_with_stat`)."""
    return read_with_stat(path, root, limit)[0]


def read_json(path: PathArg, root: Optional[PathArg] = None, limit: int = RECORD_LIMIT) -> Any:
    """The parsed JSON file ``path`` (see :func:`read_with_stat`); ValueError when it is not JSON."""
    return json.loads(read_bytes(path, root, limit))


def read_tail(path: PathArg, root: Optional[PathArg] = None, limit: int = TAIL_LIMIT) -> str:
    """The text of at most the last ``limit`` bytes of the regular file ``path`` (a log); a line cut
    by the limit is left out, undecodable bytes are replaced."""
    fd, info = open_file(path, root)
    try:
        start = max(0, info.st_size - limit)
        data = os.pread(fd, limit, start)
    finally:
        os.close(fd)
    text = data.decode(errors="replace")
    return text.partition("\n")[2] if start else text


def digest(path: PathArg, size: Optional[int] = None, root: Optional[PathArg] = None) -> tuple[str, os.stat_result]:
    """Hex sha256 and stat of the regular file ``path``; :class:`SizeMismatch` (before hashing) when
    ``size`` is given and differs."""
    fd, info = open_file(path, root)
    try:
        if size is not None and info.st_size != size:
            raise SizeMismatch(info.st_size)
        hashed = hashlib.sha256()
        while block := os.read(fd, 1 << 20):
            hashed.update(block)
        return hashed.hexdigest(), info
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writing


def open_regular(path: PathArg, append: bool = True, root: Optional[PathArg] = None) -> IO[str]:
    """Open ``path`` for text writing (created with the umask): ``append`` to a log, else read-write at
    its start (a lock file). A link or anything but a regular file there is :class:`NotARegularFile`."""
    flags = (os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
             | (os.O_APPEND if append else 0))
    folder, name = _parent(path, root)
    try:
        fd = os.open(name, flags, 0o666, dir_fd=folder)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise NotARegularFile(error.errno, f"{path} is a symbolic link; prunesweep does not follow links it "
                                               "did not create: remove it and run the command again") from None
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        os.close(folder)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotARegularFile(errno.EINVAL, f"{path} is not a regular file; remove it and run the command again")
    return os.fdopen(fd, "a+" if append else "r+", encoding="utf-8")


def atomic_write_bytes(path: PathArg, data: bytes, root: Optional[PathArg] = None, mode: int = 0o666) -> None:
    """Write ``data`` to ``path`` atomically (a new temp file in the same folder, fsync, rename), with
    ``mode`` less the umask (0o777 for a script)."""
    _atomic_write(path, lambda handle: handle.write(data), root, mode)


def atomic_save_with(path: PathArg, save: Callable[[Any], Any], root: Optional[PathArg] = None) -> None:
    """Atomically write ``path`` with a writer such as ``lambda f: torch.save(obj, f)``."""
    _atomic_write(path, save, root, 0o666)


def _new_temp(folder: int, name: str) -> tuple[int, str]:
    """A new temp file ``.NAME.XXXXXXXX.tmp`` in the open ``folder``: its descriptor and name."""
    for _ in range(100):
        temp = f".{name}.{''.join(secrets.choice(_TEMP_LETTERS) for _ in range(8))}.tmp"
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=folder), temp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temp name", name)


def _atomic_write(path: PathArg, write: Callable[[Any], Any], root: Optional[PathArg], mode: int) -> None:
    if not is_writer():  # a rank other than 0 of a distributed stage: rank 0 writes the same
        return
    try:
        folder, name = _parent(path, root, create=True)
    except OSError as error:
        if error.errno in SPACE_ERRNOS:
            raise DiskFull(Path(path), error) from error
        raise
    try:
        try:
            fd, temp = _new_temp(folder, name)
        except OSError as error:
            if error.errno in SPACE_ERRNOS:
                raise DiskFull(Path(path), error) from error
            raise
        try:
            os.fchmod(fd, mode & ~process_umask())  # a lab's shared workspace needs the umask
            with os.fdopen(fd, "wb") as handle:
                write(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException as error:
            try:
                os.unlink(temp, dir_fd=folder)
            except FileNotFoundError:
                pass
            if not isinstance(error, DiskFull) and out_of_space(error, Path(path)):
                raise DiskFull(Path(path), error) from error
            raise
    finally:
        os.close(folder)
