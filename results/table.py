"""The results table of a workspace: ``WORKSPACE/results.sqlite``.

One row per evaluated grid cell (one seed of one setting at one fraction of weights
remaining); its columns are defined in :mod:`results.row`, its schema history in
:mod:`results.migrations`. Several processes may write at once: the database runs in WAL
mode with a busy timeout and every :func:`record` call is one ``BEGIN IMMEDIATE``
transaction of ``INSERT OR IGNORE`` statements, so a row whose primary key is already
present is skipped: no stage is ever recorded twice.

Writing (:func:`record`, :func:`upgrade`) first brings an older table to the current
version in place. Reading (:func:`load`, :func:`recorded_cells`) never writes and never
creates the database: an older table is read through an upgraded in-memory copy, and a
workspace without a database or table reads as an empty table.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from results.loaded_frame import collector_paused, frame_of_rows, pandas_dtypes, text_array
from results.migrations import DB_FILE, MIGRATIONS, TABLE
from results.row import COLUMN_TYPES, COLUMNS, MISTYPED_SQL, PRIMARY_KEY, DamagedValue, prepare_row
from results.versioned_sqlite import migrate, open_for_reading, open_for_writing, table_columns, with_retry

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "DB_FILE", "PRIMARY_KEY", "TABLE", "Recorder", "db_path", "load", "record", "recorded_among",
           "recorded_cells", "upgrade"]


_INSERT_SQL = (
    f"INSERT OR IGNORE INTO {TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)


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
    recorder = Recorder(workspace)
    try:
        return recorder.record(rows)
    finally:
        recorder.close()


class Recorder:
    """:func:`record` and :func:`recorded_among` through one connection kept open.

    The driver records one row per finished stage: opening the database for each costs a
    connection, a version check and, as the last connection closes, a WAL checkpoint with
    its fsync, which dominated the driver's cost per stage (issue 16). The connection is
    opened on the first row recorded (the database is created then, as by :func:`record`).
    """

    def __init__(self, workspace: str | os.PathLike):
        self.workspace = Path(workspace)
        self._conn: sqlite3.Connection | None = None

    def record(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """As :func:`record`."""
        prepared = [prepare_row(row, index) for index, row in enumerate(rows)]
        if not prepared:
            return 0
        if self._conn is None:
            if not self.workspace.is_dir():
                raise FileNotFoundError(f"workspace folder {self.workspace} does not exist")
            self._conn = _connect_for_writing(db_path(self.workspace))
        conn = self._conn
        with_retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            before = conn.total_changes
            conn.executemany(_INSERT_SQL, prepared)
            new = conn.total_changes - before
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite already rolled back after a full disk or an I/O error
                conn.execute("ROLLBACK")
            raise
        return new

    def recorded_among(self, keys: Sequence[tuple]) -> set[tuple]:
        """As :func:`recorded_among` (through the open connection once there is one)."""
        if self._conn is None or len(keys) > _LOOKUP_LIMIT:
            return recorded_among(self.workspace, keys)
        conn = self._conn
        return set(with_retry(lambda: [row for key in keys for row in conn.execute(_SELECT_KEY, key)]))

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def load(workspace: str | os.PathLike | Sequence[str | os.PathLike],
         pending: Mapping[str | os.PathLike, Sequence[Mapping[str, Any]]] | None = None,
         only: Mapping[str, Iterable[str]] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """All rows of the workspace's results table as a DataFrame, columns in schema order.

    Integer columns are pandas nullable ``Int64`` (``level`` is ``<NA>`` for one-shot
    pruning), real columns ``float64``, text columns pandas' default string dtype. Rows
    come in the order they were recorded. A workspace with no database or no table
    gives an empty frame with the same columns and dtypes; reading never creates files.

    Given a list of workspaces, the result is one frame of all their rows, workspace
    after workspace, led by a ``workspace`` column (the path as given, as text; it is a
    column of the loaded frame only, never of the stored table). A workspace named twice
    (the same folder) is read once. The index runs from 0 either way.

    ``pending`` (workspace -> rows, as for :func:`record`): rows a reader could not record in a
    workspace it must not write. They are inserted into an in-memory copy of that workspace's
    table and read with its rows, in the order :func:`record` would have given them; the
    workspace's files are never written.

    ``only`` (text column -> values): only the rows whose column holds one of the values (all
    of them, for several columns), selected by SQLite before anything is read into Python:
    what a ``--where`` of text equalities keeps, at the cost of the rows it keeps
    (:func:`results.conditions.text_equalities`).

    ``columns``: only these columns of the table (in schema order; ``workspace`` comes with
    several workspaces either way), for a reader that uses no other
    (:func:`results.query.columns_needed`): each column left out is a column less to read.
    """
    import pandas as pd

    read = COLUMNS if columns is None else tuple(column for column in COLUMNS if column in set(columns))
    sql, parameters = _select_all(only, read)
    extra = {Path(path).resolve(): rows for path, rows in (pending or {}).items() if rows}
    with collector_paused():
        if isinstance(workspace, (str, os.PathLike)):
            found = _select(workspace, sql, parameters, pending=extra.get(Path(workspace).resolve()))
            names = [os.fspath(workspace)] * len(found)
            return _named_frame(found, read, names)
        paths: dict[Path, str] = {}
        for path in workspace:
            paths.setdefault(Path(path).resolve(), os.fspath(path))
        names, rows = [], []
        for resolved, name in paths.items():
            found = _select(resolved, sql, parameters, pending=extra.get(resolved))
            names.extend([name] * len(found))
            rows.extend(found)
        frame = _named_frame(rows, read, names)
    frame.insert(0, "workspace", pd.Series(text_array(names, pandas_dtypes()[0]), index=frame.index))
    return frame


def _named_frame(rows: list[tuple], columns: Sequence[str], names: list[str]) -> pd.DataFrame:
    """:func:`~results.loaded_frame.frame_of_rows`, a :class:`DamagedValue` naming the database
    (``names``: each row's workspace)."""
    try:
        return frame_of_rows(rows, columns)
    except DamagedValue as error:
        error.workspace = names[error.row]
        raise DamagedValue(f"{db_path(error.workspace)}: {error}", error.row, error.workspace) from None



def _select_all(only: Mapping[str, Iterable[str]] | None, columns: Sequence[str] = COLUMNS) -> tuple[str, list[tuple]]:
    """The query of ``columns`` of the rows ``only`` keeps, and its parameters (for :func:`_select`)."""
    if not only:
        return f"SELECT {', '.join(columns)} FROM {TABLE} ORDER BY rowid", []
    tests, values = [], []
    for column, allowed in only.items():
        if COLUMN_TYPES.get(column) != "TEXT":
            raise ValueError(f"only: {column!r} is not a text column of the table")
        allowed = list(dict.fromkeys(allowed))
        tests.append(f"{column} IN ({', '.join('?' for _ in allowed)})" if allowed else "0")
        values.extend(allowed)
    return (f"SELECT {', '.join(columns)} FROM {TABLE} WHERE {' AND '.join(tests)} ORDER BY rowid",
            [tuple(values)])



def recorded_cells(workspace: str | os.PathLike) -> set[tuple]:
    """Primary-key tuples (in :data:`PRIMARY_KEY` order) of every recorded row; empty if none."""
    return set(_select(workspace, f"SELECT {', '.join(PRIMARY_KEY)} FROM {TABLE}"))


def recorded_among(workspace: str | os.PathLike, keys: Sequence[tuple]) -> set[tuple]:
    """Those of ``keys`` (primary-key tuples in :data:`PRIMARY_KEY` order) already recorded.

    A few keys are looked up one by one through the primary key's index, so the cost does
    not grow with the table; many are compared with one read of every recorded key.
    """
    if not keys:
        return set()
    if len(keys) > _LOOKUP_LIMIT:
        return recorded_cells(workspace) & set(keys)
    return set(_select(workspace, _SELECT_KEY, keys))


#: above this many keys, :func:`recorded_among` reads every recorded key once instead.
_LOOKUP_LIMIT = 64
_SELECT_KEY = (f"SELECT {', '.join(PRIMARY_KEY)} FROM {TABLE} "
               f"WHERE {' AND '.join(f'{name} = ?' for name in PRIMARY_KEY)}")


def keep_only_stages(workspace: str | os.PathLike, stage_keys: Iterable[str]) -> int:
    """Delete every row whose stage is not in ``stage_keys`` (``prunesweep repair``: the table is
    rebuilt from the artifacts, so a row of a stage not verified done goes), and every row holding
    a value its column's type does not take (recorded again from its stage); return how many went.

    One transaction; a workspace without a database is left without one.
    """
    if not db_path(workspace).is_file():
        return 0
    conn = _connect_for_writing(db_path(workspace))
    try:
        with_retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            conn.execute("CREATE TEMP TABLE keep (stage_key TEXT PRIMARY KEY)")
            conn.executemany("INSERT OR IGNORE INTO keep VALUES (?)", ((key,) for key in stage_keys))
            removed = conn.execute(f"DELETE FROM {TABLE} WHERE stage_key NOT IN (SELECT stage_key FROM keep) "
                                   f"OR {MISTYPED_SQL}").rowcount
            conn.execute("DROP TABLE keep")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return removed


def upgrade(workspace: str | os.PathLike) -> None:
    """Bring the workspace's results table, if there is one, to the current schema version in place."""
    if db_path(workspace).is_file():
        _connect_for_writing(db_path(workspace)).close()


# --------------------------------------------------------------------------- internals



def _connect_for_writing(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database at the current version, checking its columns."""
    conn = open_for_writing(path, MIGRATIONS)
    try:
        _check_columns(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _select(workspace: str | os.PathLike, sql: str, each: Sequence[tuple] = (),
            pending: Sequence[Mapping[str, Any]] | None = None) -> list[tuple]:
    """Run a read-only query (once per parameter tuple of ``each`` when given, the rows found
    concatenated); ``[]`` when the database or the table does not exist. With ``pending`` rows,
    the query reads an in-memory copy of the table holding them too."""
    path = db_path(workspace)
    conn = _copy_with(path, pending) if pending else open_for_reading(path, MIGRATIONS)
    if conn is None:
        return []
    with closing(conn):
        if not table_columns(conn, TABLE):
            return []
        _check_columns(conn, path)
        if each:
            return with_retry(lambda: [row for parameters in each for row in conn.execute(sql, parameters)])
        return with_retry(lambda: conn.execute(sql).fetchall())


def _copy_with(path: Path, rows: Sequence[Mapping[str, Any]]) -> sqlite3.Connection:
    """An in-memory copy of the store at ``path`` (a new empty table when there is none) with
    ``rows`` inserted as :func:`record` would; the file is only read."""
    prepared = [prepare_row(row, index) for index, row in enumerate(rows)]
    conn = open_for_reading(path, MIGRATIONS, copy=True)
    if conn is None:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        migrate(conn, path, MIGRATIONS)
    try:
        if not table_columns(conn, TABLE):  # a store without the table: made by the migrations
            raise RuntimeError(f"{path}: has no table {TABLE!r}")
        _check_columns(conn, path)
        conn.executemany(_INSERT_SQL, prepared)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_columns(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a table whose columns are not those of :data:`results.row.ROW`."""
    found = table_columns(conn, TABLE)
    if found != COLUMNS:
        raise RuntimeError(
            f"{path}: table {TABLE!r} has columns {', '.join(found)}; expected {', '.join(COLUMNS)} "
            "(results.row and results.migrations disagree, or the file was changed by hand)"
        )
