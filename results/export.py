"""Write a results frame to CSV or Parquet atomically (temp file in the same folder + rename)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from results.atomic_files import atomic_save_with
from results.central_db import STATE_FILE
from results.migrations import DB_FILE

#: the workspace's own stores and lock, and the folder of its stages, which an export never replaces (as
#: ``workers.stages.paths`` names them; ``tests/unit/test_stage_paths.py`` checks that they agree).
WORKSPACE_STATE = ("ledger.sqlite", DB_FILE, STATE_FILE, ".lock")
STAGES_FOLDER = "stages"

if TYPE_CHECKING:
    import pandas as pd


#: what a plot's file suffix may be (matplotlib's Agg canvas writes these).
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp", "pgf", "gif")


def target_problem(path: str | os.PathLike, protected: list[Path], plot: bool = False) -> str | None:
    """Why ``path`` may not be written by an export, or None.

    An export writes a regular file only (never replaces a folder, a symbolic link, a device
    or any other non-regular file), into a folder that exists (none is created silently),
    never onto one of the ``protected`` folders' own state (their databases, lock and stage
    folders); a plot's suffix names a format it can be drawn in.
    """
    target = Path(path)
    if target.is_symlink():
        return f"{target} is a symbolic link; an export replaces only a regular file"
    if target.exists() and not target.is_file():
        kind = "a folder" if target.is_dir() else "not a regular file"
        return f"{target} is {kind}; an export writes a regular file"
    if not target.parent.is_dir():
        return f"the folder {target.parent} does not exist; create it first"
    resolved = target.resolve()
    for folder in protected:
        state = folder.resolve()
        inside = resolved.parent == state and resolved.name.startswith(WORKSPACE_STATE)
        if inside or state / STAGES_FOLDER in resolved.parents:
            return f"{target} is part of the workspace {folder}'s own state; write the export elsewhere"
    if plot and (target.suffix.lstrip(".").lower() or "png") not in PLOT_FORMATS:
        return f"unknown plot format {target.suffix!r}; allowed: {', '.join('.' + f for f in PLOT_FORMATS)}"
    return None


def export_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` (without its index) as UTF-8 CSV to ``path`` atomically; return the path.

    Missing values are written as empty fields, so ``pandas.read_csv`` reads them back as NaN.
    """
    atomic_save_with(Path(path), lambda handle: df.to_csv(handle, index=False, encoding="utf-8"))
    return Path(path)


def export_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` (without its index) as Parquet (pyarrow) to ``path`` atomically; return the path.

    Column dtypes, including the nullable ``Int64`` columns of :func:`results.load`,
    survive a round trip through ``pandas.read_parquet``.
    """
    atomic_save_with(Path(path), lambda handle: df.to_parquet(handle, index=False, engine="pyarrow"))
    return Path(path)
