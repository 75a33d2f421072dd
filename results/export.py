"""Write a results frame to CSV or Parquet atomically (temp file in the same folder + rename)."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .atomic_files import atomic_save_with


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
