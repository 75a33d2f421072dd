"""Many new small files written together with two file-system syncs (``launch``'s ``stage.json``, issue 16).

Built on :mod:`workers.stages.workspace_files`: no link is followed, nor, given the workspace, a linked folder.
"""
from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from workers.stages.workspace_files import PathArg, enter_folder, open_folder
from workers.training.distributed import is_writer


def atomic_write_new_files(files: Iterable[tuple[Path, bytes]], root: Optional[PathArg] = None) -> None:
    """Write many small files atomically with two file-system syncs instead of one fsync each.

    Every file is first written to ``.<name>.tmp`` beside it (created with the user's umask,
    never through a symbolic link, nor, given ``root``, through a linked folder); one sync of the
    file system makes all their contents durable; then each is renamed into place and a second
    sync makes the renames durable. A crash at any point leaves each path absent or complete,
    never half written, and returning means every file is on disk: a caller records them as
    written only after. Made for ``launch`` writing tens of thousands of ``stage.json`` (issue 16);
    the temp name is fixed, so the caller must be the only writer of these folders (the
    workspace lock), and a temp file left by a killed run is simply replaced by the next.
    Each file must be in a folder below ``root``.
    """
    if not is_writer():
        return
    uppers: dict[str, int] = {}  # the few folders above the new ones, each entered once

    def folder_of(path: Path) -> int:
        upper, leaf = os.path.split(os.path.dirname(os.path.abspath(path)))
        if upper not in uppers:
            uppers[upper] = open_folder(upper, root, create=True)
        return enter_folder(uppers[upper], leaf, Path(upper) / leaf, create=True)

    staged: list[tuple[Path, str, str]] = []
    renamed = 0
    try:
        for path, data in files:
            folder = folder_of(Path(path))
            try:
                name = os.path.basename(path)
                try:  # a killed run's temp file is replaced by a new one (truncating it could write through a
                    # hard link); anything else of that name (a link) is left alone, and refused below
                    if stat.S_ISREG(os.stat(f".{name}.tmp", dir_fd=folder, follow_symlinks=False).st_mode):
                        os.unlink(f".{name}.tmp", dir_fd=folder)
                except FileNotFoundError:
                    pass
                fd = os.open(f".{name}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o666, dir_fd=folder)
                staged.append((Path(path), f".{name}.tmp", name))
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                finally:
                    os.close(fd)
            finally:
                os.close(folder)
        if not staged:
            return
        _sync_file_systems(uppers.values())  # the contents first: a rename must never outlive its data
        for path, temp, name in staged:
            folder = folder_of(path)
            try:
                os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
            finally:
                os.close(folder)
            renamed += 1
        _sync_file_systems(uppers.values())
    except BaseException:
        for path, temp, _ in staged[renamed:]:
            try:
                folder = folder_of(path)
            except OSError:
                continue
            try:
                os.unlink(temp, dir_fd=folder)
            except OSError:
                pass
            finally:
                os.close(folder)
        raise
    finally:
        for fd in uppers.values():
            os.close(fd)


def _sync_file_systems(folders: Iterable[int]) -> None:
    """Flush the file system(s) holding the open ``folders`` (Linux ``syncfs``, else a global ``sync``)."""
    seen: dict[int, int] = {}
    for fd in folders:
        seen.setdefault(os.fstat(fd).st_dev, fd)
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    for fd in seen.values():
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
