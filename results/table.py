"""The central results table of a workspace: ``WORKSPACE/results.sqlite``.

One row per evaluated grid cell (one seed of one setting at one fraction of weights
remaining). Several processes may write at once: the database runs in WAL mode with a
busy timeout and every :func:`record` call is one ``BEGIN IMMEDIATE`` transaction of
``INSERT OR IGNORE`` statements, so a row whose primary key is already present is
skipped: no stage is ever recorded twice.

Reading (:func:`load`, :func:`recorded_cells`) only selects and never creates the
database; a workspace without a database or table reads as an empty table.
"""
from __future__ import annotations

import math
import numbers
import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

DB_FILE = "results.sqlite"
TABLE = "results"

#: (column, SQLite type) in table order. ``load`` returns the columns in this order.
SCHEMA: tuple[tuple[str, str], ...] = (
    ("sweep", "TEXT"),
    ("stage_key", "TEXT"),
    ("dataset", "TEXT"),
    ("arch", "TEXT"),
    ("mask_source", "TEXT"),
    ("init", "TEXT"),
    ("rewind", "TEXT"),  # as written in the sweep: "0", "1ep", "500it"
    ("rewind_iteration", "INTEGER"),
    ("level", "INTEGER"),  # IMP round; NULL for one-shot pruning
    ("nominal_fraction", "REAL"),
    ("measured_fraction", "REAL"),
    ("seed", "INTEGER"),
    ("top1", "REAL"),
    ("epochs", "INTEGER"),
    ("wall_time_s", "REAL"),
    ("recorded_at", "TEXT"),  # ISO 8601 time; filled in by record() when absent
    # optional columns (added after the first schema: older tables gain them on the next write)
    ("natural_sparsity", "REAL"),  # fraction of prunable weights exactly zero after the dense run
    ("metric", "TEXT"),  # what top1 holds: "top1" (default when NULL) or "map"
    ("eval_dataset", "TEXT"),  # the dataset a transfer evaluation ran on; NULL: the sweep's dataset
)
#: Columns a row may leave out (None); older tables lack them until their next write.
OPTIONAL: tuple[str, ...] = ("natural_sparsity", "metric", "eval_dataset")
COLUMNS: tuple[str, ...] = tuple(name for name, _ in SCHEMA)
COLUMN_TYPES: dict[str, str] = dict(SCHEMA)

#: A row is identified by these columns; recording the same key again is a no-op.
PRIMARY_KEY: tuple[str, ...] = (
    "sweep", "mask_source", "init", "rewind", "nominal_fraction", "seed", "stage_key",
)
#: Columns every row must give (all but ``recorded_at``, which defaults to now, and the optional ones).
REQUIRED: tuple[str, ...] = tuple(c for c in COLUMNS if c != "recorded_at" and c not in OPTIONAL)
#: The columns of the first schema, which a table may still have (read as is, migrated on write).
_FIRST_SCHEMA: tuple[str, ...] = tuple(c for c in COLUMNS if c not in OPTIONAL)
#: Columns that may not be None/NaN: the primary key plus what a result is about.
NOT_NULL: tuple[str, ...] = PRIMARY_KEY + ("dataset", "arch", "top1", "recorded_at")

BUSY_TIMEOUT_S = 60.0

_CREATE_SQL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (\n"
    + ",\n".join(
        f"  {name} {sqltype}" + (" NOT NULL" if name in NOT_NULL else "") for name, sqltype in SCHEMA
    )
    + f",\n  PRIMARY KEY ({', '.join(PRIMARY_KEY)})\n)"
)
_INSERT_SQL = (
    f"INSERT OR IGNORE INTO {TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)

# pandas dtypes of the loaded frame: nullable integers (level is NULL for one-shot),
# floats, and pandas' default string dtype ("str" in pandas 3, object before).
_TEXT_DTYPE = pd.Series(["x"]).dtype
_PANDAS_DTYPES = {"TEXT": _TEXT_DTYPE, "INTEGER": "Int64", "REAL": "float64"}


def db_path(workspace: str | os.PathLike) -> Path:
    """Path of the results database of ``workspace`` (the file may not exist yet)."""
    return Path(workspace) / DB_FILE


def record(workspace: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert evaluated grid cells into the workspace's results table; return how many were new.

    Each row is a mapping with every column of :data:`COLUMNS` except ``recorded_at``
    (which defaults to the current UTC time). Values are checked and converted to the
    column's type first; a missing or unknown key, or a bad value, raises
    :class:`ValueError` naming it, and then nothing at all is written. Rows whose
    primary key (:data:`PRIMARY_KEY`) is already in the table are ignored and not
    counted. The workspace folder must exist; the database is created on first use.
    """
    prepared = [_prepare_row(row, index) for index, row in enumerate(rows)]
    if not prepared:
        return 0
    workspace = Path(workspace)
    if not workspace.is_dir():
        raise FileNotFoundError(f"workspace folder {workspace} does not exist")
    with closing(_connect_for_writing(db_path(workspace))) as conn:
        _with_retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            before = conn.total_changes
            conn.executemany(_INSERT_SQL, prepared)
            new = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return new


def load(workspace: str | os.PathLike) -> pd.DataFrame:
    """All rows of the workspace's results table as a DataFrame, columns in schema order.

    Integer columns are pandas nullable ``Int64`` (``level`` is ``<NA>`` for one-shot
    pruning), real columns ``float64``, text columns pandas' default string dtype. Rows
    come in the order they were recorded. A workspace with no database or no table
    gives an empty frame with the same columns and dtypes; reading never creates files.
    """
    rows = _select(workspace, f"SELECT {', '.join(COLUMNS)} FROM {TABLE} ORDER BY rowid")
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    return frame.astype({name: _PANDAS_DTYPES[sqltype] for name, sqltype in SCHEMA})


def recorded_cells(workspace: str | os.PathLike) -> set[tuple]:
    """Primary-key tuples (in :data:`PRIMARY_KEY` order) of every recorded row; empty if none."""
    return set(_select(workspace, f"SELECT {', '.join(PRIMARY_KEY)} FROM {TABLE}"))


# --------------------------------------------------------------------------- internals


def _prepare_row(row: Mapping[str, Any], index: int) -> tuple:
    """Validate one row and return its values as a tuple in :data:`COLUMNS` order."""
    if not isinstance(row, Mapping):
        raise ValueError(f"row {index}: expected a mapping of column -> value, got {type(row).__name__}")
    missing = [key for key in REQUIRED if key not in row]
    if missing:
        raise ValueError(f"row {index}: missing key(s) {', '.join(missing)} (required: {', '.join(REQUIRED)})")
    unknown = sorted(str(key) for key in row if key not in COLUMN_TYPES)
    if unknown:
        raise ValueError(f"row {index}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(COLUMNS)})")
    values = {**{name: None for name in OPTIONAL}, **row}
    if values.get("recorded_at") is None:
        values["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    converted = []
    for name, sqltype in SCHEMA:
        value = _convert(values[name], sqltype)
        if value is _INVALID:
            raise ValueError(
                f"row {index}: {name}={values[name]!r} is not a valid {sqltype} value"
            )
        if value is None and name in NOT_NULL:
            raise ValueError(f"row {index}: {name} may not be empty (got {values[name]!r})")
        converted.append(value)
    return tuple(converted)


_INVALID = object()


def _convert(value: Any, sqltype: str) -> Any:
    """Convert ``value`` to the Python type SQLite stores for ``sqltype``; ``_INVALID`` if impossible."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool):
        return _INVALID
    if sqltype == "TEXT":
        if isinstance(value, str):
            return value
        if isinstance(value, numbers.Integral):
            return str(int(value))  # e.g. rewind given as 0
        return _INVALID
    if sqltype == "INTEGER":
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and float(value).is_integer():
            return int(value)
        return _INVALID
    if sqltype == "REAL":
        if isinstance(value, numbers.Real):
            number = float(value)
            if math.isnan(number):
                return None
            if math.isinf(number):
                return _INVALID
            return number
        return _INVALID
    raise AssertionError(f"unknown SQLite type {sqltype}")


def _connect_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database in WAL mode and make sure the table exists."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = _with_retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: could not switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        _with_retry(lambda: conn.execute(_CREATE_SQL))
        if _check_columns(conn, path) != COLUMNS:
            for name in OPTIONAL:  # a table of the first schema gains the optional columns
                _with_retry(lambda: conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {COLUMN_TYPES[name]}"))
    except BaseException:
        conn.close()
        raise
    return conn


def _select(workspace: str | os.PathLike, sql: str) -> list[tuple]:
    """Run a read-only query; ``[]`` when the database or the table does not exist."""
    path = db_path(workspace)
    if not path.is_file():
        return []
    # mode=rw never creates the database, and as the last connection to close it folds
    # the WAL back and removes the -wal/-shm files (a mode=ro connection leaves them
    # behind); mode=ro is the fallback for a database we may not write to.
    try:
        return _query(path, "rw", sql)
    except sqlite3.OperationalError as error:
        if "readonly" not in str(error).lower() and "unable to open" not in str(error).lower():
            raise
        return _query(path, "ro", sql)


def _query(path: Path, mode: str, sql: str) -> list[tuple]:
    uri = path.resolve().as_uri() + f"?mode={mode}"
    with closing(sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)) as conn:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        exists = _with_retry(
            lambda: conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)
            ).fetchone()
        )
        if not exists:
            return []
        if _check_columns(conn, path) != COLUMNS:  # first schema: the optional columns read as NULL
            for name in OPTIONAL:
                sql = sql.replace(f", {name}", f", NULL AS {name}")
        return _with_retry(lambda: conn.execute(sql).fetchall())


def _check_columns(conn: sqlite3.Connection, path: Path) -> tuple[str, ...]:
    """The table's columns: :data:`COLUMNS` or the first schema's; refuse any other schema."""
    found = tuple(info[1] for info in conn.execute(f"PRAGMA table_info({TABLE})"))
    if found not in (COLUMNS, _FIRST_SCHEMA):
        raise RuntimeError(
            f"{path}: table {TABLE!r} has columns {', '.join(found)}; expected {', '.join(COLUMNS)}"
        )
    return found


def _with_retry(action, attempts: int = 20):
    """Run ``action``, retrying briefly on 'database is locked' errors the busy handler misses.

    SQLite does not call the busy handler in a few cases (e.g. while another connection
    switches the journal mode or creates the table), so a short backoff covers them.
    """
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as error:
            message = str(error).lower()
            if ("locked" not in message and "busy" not in message) or attempt == attempts - 1:
                raise
            time.sleep(min(0.05 * (attempt + 1), 0.5))
    raise AssertionError("unreachable")
