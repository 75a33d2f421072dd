"""Atomic file writes for the results package: a temp file in the same folder, fsync, rename.

A crash leaves either the old file or the new one, never half of one. The workers keep
their own copy of this in ``workers/artifacts.py`` (which also skips writes on ranks
other than 0): the worker package is what a SLURM job snapshots and runs alone, so it
imports nothing from here, and ``results`` imports nothing from ``workers``.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_save_with(path: Path, save: Callable[[Any], Any]) -> None:
    """Write ``path`` atomically with ``save(handle)``, e.g. ``lambda f: df.to_csv(f)``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp makes 0600; exports keep the user's umask
        with os.fdopen(fd, "wb") as handle:
            save(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
