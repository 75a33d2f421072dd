"""A lab's central results database: every workspace's rows in one table, queried without them.

A database URL (``postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE``, through SQLAlchemy and
psycopg 3; ``sqlite:///PATH`` for a shared file) names it. Each row of a workspace's table
(:mod:`results.table`) is *upserted* there, keyed by the workspace's stable id and the row's
own key (:data:`KEY`: the workspace's primary key, whose ``stage_key`` alone can repeat when two
nominal fractions round to one IMP level or two sweeps share a stage), with
``INSERT ... ON CONFLICT DO UPDATE``: pushing a row again (a relaunch, a resume, a second
process or cluster writing the same workspace) changes nothing, and no row is ever there twice.

The workspace keeps what the database has not received yet: ``WORKSPACE/central_db.sqlite``
holds the workspace's id (made at its first push) and, per database, the last row (SQLite
rowid of ``results.sqlite``, which only grows) pushed there. Rows after that mark are the
rows *waiting*; :func:`push` sends them in order and moves the mark, so a database that is
down only delays them, and a push cut short is simply repeated (the upsert is idempotent).

The central table carries its schema version in a small table (``prunesweep_schema``);
:data:`results.central_migrations.CENTRAL_MIGRATIONS` takes it from one version to the next,
applied by the first writer under a lock, and a database of a newer version is refused.

SQLAlchemy and psycopg are imported only when a database is used. A URL is parsed by
:mod:`results.db_url`; what is shown or stored names the database by its target (user, host,
port, database), never by its password, which only reaches the driver.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from results.central_migrations import CENTRAL_MIGRATIONS, KEY, TABLE, sqltype
from results.db_url import ALLOWED_URLS, DatabaseUrl, parse, redact, shown
from results.migrations import DB_FILE as _RESULTS_FILE
from results.migrations import MIGRATIONS as _RESULTS_MIGRATIONS
from results.migrations import TABLE as _RESULTS_TABLE
from results.row import COLUMN_TYPES, COLUMNS
from results.versioned_sqlite import Migration, open_for_reading, open_for_writing, sql, with_retry

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from sqlalchemy.engine import Connection, Engine

#: as ``workers.stages.paths.CENTRAL_STATE_FILE`` (``tests/unit/test_stage_paths.py`` checks that they agree).
STATE_FILE = "central_db.sqlite"
#: the central table's schema-version table (the table, its key and its migrations: results.central_migrations).
VERSION_TABLE = "prunesweep_schema"
#: columns of the central table besides the results row's: who wrote the row, and its place there.
EXTRA_COLUMNS = ("workspace_id", "workspace", "row_number")
#: rows per INSERT statement (PostgreSQL allows 65,535 parameters per statement).
BATCH = 1000
CONNECT_TIMEOUT_S = 5

class CentralDbError(RuntimeError):
    """The central database cannot be used: unreachable, refused us, or of a newer schema."""


# --------------------------------------------------------------------------- URLs


def check_url(url: str) -> str:
    """The SQLAlchemy form of a central database URL; ``ValueError`` (URL without secrets) if it is not one.

    ``postgresql://`` and ``postgres://`` mean psycopg 3 (``postgresql+psycopg://``); a
    PostgreSQL URL needs a host and a database name, a SQLite one a file path.
    """
    found = parse(url)
    if found.kind == "sqlite":
        return url.strip()
    return "postgresql+psycopg://" + url.strip().split("://", 1)[1]


def describe(url: str) -> str:
    """Where the database is, for a status line: ``HOST:PORT/DATABASE`` or the SQLite file."""
    return parse(url).where


def target(url: str) -> str:
    """The database of ``url`` as a workspace stores it: user, host, port and database, no secret."""
    return parse(url).target


# --------------------------------------------------------------------------- the workspace's side


def _state_migrations() -> list[Migration]:
    return [sql(
        "CREATE TABLE identity (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # per database (its URL without the password): the last results.sqlite rowid it holds
        "CREATE TABLE pushed (target TEXT PRIMARY KEY, last_rowid INTEGER NOT NULL DEFAULT 0, "
        "pushed_at REAL, failed_at REAL, error TEXT)",
    )]


def _targets_without_secrets(conn) -> None:
    """Version 2: a target of version 1 was the URL less its password, which kept a password= option
    and a password holding a '/' or a blank; each becomes user, host, port and database (two that
    name one database keep the later mark), and the recorded errors, which quoted such URLs, go."""
    rows = conn.execute("SELECT target, last_rowid, pushed_at, failed_at FROM pushed").fetchall()
    conn.execute("DELETE FROM pushed")
    for old, last_rowid, pushed_at, failed_at in rows:
        try:
            new = _target(old)
        except ValueError:  # no longer a URL we read: its rows are pushed again (the upsert makes that harmless)
            continue
        conn.execute("INSERT INTO pushed (target, last_rowid, pushed_at, failed_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT(target) DO UPDATE SET last_rowid = max(last_rowid, excluded.last_rowid)",
                     (new, last_rowid, pushed_at, failed_at))


STATE_MIGRATIONS: list[Migration] = [*_state_migrations(), _targets_without_secrets]


def _target(url: str) -> str:
    """How central_db.sqlite names a database: user, host, port and database (as before the
    password was kept out of it, so a mark made then still counts)."""
    found = parse(url)
    return found.target if found.kind == "sqlite" else found.target.replace("postgresql://", "postgresql+psycopg://", 1)


def _open_state(workspace: Path):
    """The workspace's central_db.sqlite for writing (created at first use; never through a link)."""
    path = workspace / STATE_FILE
    if path.is_symlink():
        raise CentralDbError(f"{path} is a symbolic link; prunesweep writes its own state only to a regular file")
    return open_for_writing(path, STATE_MIGRATIONS)


def workspace_id(workspace: str | os.PathLike) -> str:
    """The workspace's stable id (a UUID), made and stored at the first call."""
    with closing(_open_state(Path(workspace))) as conn:
        with_retry(lambda: conn.execute("INSERT OR IGNORE INTO identity (key, value) VALUES ('workspace_id', ?)",
                                        (str(uuid.uuid4()),)))
        return str(conn.execute("SELECT value FROM identity WHERE key = 'workspace_id'").fetchone()[0])


def waiting(workspace: str | os.PathLike, url: str) -> int:
    """How many of the workspace's rows the database has not received yet (reads only)."""
    workspace = Path(workspace)
    last = _last_pushed(workspace, _target(url))
    conn = open_for_reading(workspace / _RESULTS_FILE, _RESULTS_MIGRATIONS)
    if conn is None:
        return 0
    with closing(conn):
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_RESULTS_TABLE,)).fetchone():
            return 0
        return int(with_retry(lambda: conn.execute(
            f"SELECT count(*) FROM {_RESULTS_TABLE} WHERE rowid > ?", (last,)).fetchone()[0]))


def _last_pushed(workspace: Path, target: str) -> int:
    conn = open_for_reading(workspace / STATE_FILE, STATE_MIGRATIONS)
    if conn is None:
        return 0
    with closing(conn):
        row = with_retry(lambda: conn.execute("SELECT last_rowid FROM pushed WHERE target = ?",
                                              (target,)).fetchone())
        return int(row[0]) if row else 0


def _mark(workspace: Path, target: str, last_rowid: Optional[int], error: Optional[str]) -> None:
    """Record a push: the new mark (never moved back), or the failure."""
    with closing(_open_state(workspace)) as conn:
        now = time.time()
        with_retry(lambda: conn.execute("INSERT OR IGNORE INTO pushed (target) VALUES (?)", (target,)))
        if last_rowid is None:
            with_retry(lambda: conn.execute("UPDATE pushed SET failed_at = ?, error = ? WHERE target = ?",
                                            (now, error, target)))
        else:
            with_retry(lambda: conn.execute(
                "UPDATE pushed SET last_rowid = max(last_rowid, ?), pushed_at = ?, error = NULL WHERE target = ?",
                (last_rowid, now, target)))


def _rows_after(workspace: Path, last: int) -> list[tuple]:
    """(rowid, *COLUMNS) of the workspace's rows after ``last``, in order."""
    conn = open_for_reading(workspace / _RESULTS_FILE, _RESULTS_MIGRATIONS)
    if conn is None:
        return []
    with closing(conn):
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (_RESULTS_TABLE,)).fetchone():
            return []
        return with_retry(lambda: conn.execute(
            f"SELECT rowid, {', '.join(COLUMNS)} FROM {_RESULTS_TABLE} WHERE rowid > ? ORDER BY rowid",
            (last,)).fetchall())


def push(workspace: str | os.PathLike, url: str) -> int:
    """Upsert the workspace's waiting rows into the database; return how many were sent.

    Raises :class:`CentralDbError` (password hidden) when the database cannot take them;
    the rows then keep waiting and the failure is noted in the workspace.
    """
    workspace = Path(workspace)
    target = _target(url)
    last = _last_pushed(workspace, target)
    rows = _rows_after(workspace, last)
    if not rows:
        return 0
    ident = workspace_id(workspace)
    label = f"{socket.gethostname()}:{workspace.resolve()}"
    records = [{"workspace_id": ident, "workspace": label, "row_number": row[0],
                **dict(zip(COLUMNS, row[1:], strict=True))} for row in rows]
    try:
        with _engine(url).begin() as conn:
            _ensure_schema(conn, url)
            table = _table()
            for start in range(0, len(records), BATCH):
                conn.execute(_upsert(conn, table, records[start:start + BATCH]))
    except CentralDbError as error:
        _mark(workspace, target, None, str(error))
        raise
    except Exception as error:  # any driver or network error: the rows wait
        message = _reason(error, url)
        _mark(workspace, target, None, message)
        raise CentralDbError(f"{shown(url)}: {message}") from None
    _mark(workspace, target, rows[-1][0], None)
    return len(records)


# --------------------------------------------------------------------------- the database's side

_ENGINES: dict[str, Engine] = {}


def _engine(url: str) -> Engine:
    """One engine per URL and process (a pool of connections), made on first use from the URL's parts
    (SQLAlchemy's own parser misreads some passwords)."""
    found = parse(url)
    if url not in _ENGINES:
        from sqlalchemy import create_engine

        if found.kind == "sqlite":
            _ENGINES[url] = create_engine(found.sqlalchemy_url(), connect_args={"timeout": 60})
        else:
            _ENGINES[url] = create_engine(found.sqlalchemy_url(), pool_pre_ping=True,
                                          connect_args={"connect_timeout": CONNECT_TIMEOUT_S})
    return _ENGINES[url]


def close_connections() -> None:
    """Close every pooled connection of this process (each server is told, not left to notice)."""
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def _reason(error: BaseException, url: str) -> str:
    """One line of why a database operation failed, without any secret of ``url``."""
    original = getattr(error, "orig", None) or error
    text = str(original) or type(original).__name__
    return " ".join(parse(url).hide(text).split())[:300]


def _table():
    """The central table as SQLAlchemy Core sees it (the current version's columns)."""
    from sqlalchemy import BigInteger, Column, MetaData, PrimaryKeyConstraint, Table, Text

    metadata = MetaData()
    columns: list[Any] = [Column("workspace_id", Text, nullable=False), Column("workspace", Text, nullable=False),
                          Column("row_number", BigInteger, nullable=False)]
    columns += [Column(name, sqltype(kind)) for name, kind in COLUMN_TYPES.items()]
    return Table(TABLE, metadata, *columns, PrimaryKeyConstraint(*KEY))


def _version_table():
    from sqlalchemy import Column, Integer, MetaData, Table

    return Table(VERSION_TABLE, MetaData(), Column("version", Integer, nullable=False))


def _ensure_schema(conn: Connection, url: str) -> None:
    """Bring the central tables to the current version inside ``conn``'s transaction (under a lock)."""
    from sqlalchemy import inspect, select, text

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7220130)"))  # one migrating writer at a time
    versions = _version_table()
    if not inspect(conn).has_table(VERSION_TABLE):
        versions.create(conn)
        conn.execute(versions.insert().values(version=0))
    version = conn.execute(select(versions.c.version)).scalar_one()
    if version > len(CENTRAL_MIGRATIONS):
        raise CentralDbError(f"{shown(url)}: schema version {version} was made by a newer prunesweep (this one "
                             f"knows up to version {len(CENTRAL_MIGRATIONS)}); upgrade prunesweep")
    for step in CENTRAL_MIGRATIONS[version:]:
        step(conn)
    if version < len(CENTRAL_MIGRATIONS):
        conn.execute(versions.update().values(version=len(CENTRAL_MIGRATIONS)))


def _upsert(conn: Connection, table, records: Sequence[dict[str, Any]]):
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(table).values(list(records))
    return statement.on_conflict_do_update(
        index_elements=list(KEY),
        set_={name: statement.excluded[name] for name in ("workspace", "row_number", *COLUMNS) if name not in KEY})


def schema_version(url: str) -> int:
    """The central database's schema version (0 before the first push)."""
    from sqlalchemy import inspect, select

    try:
        with _engine(url).connect() as conn:
            if not inspect(conn).has_table(VERSION_TABLE):
                return 0
            return int(conn.execute(select(_version_table().c.version)).scalar_one())
    except Exception as error:
        raise CentralDbError(f"{shown(url)}: {_reason(error, url)}") from None


def load(url: str) -> pd.DataFrame:
    """Every row of the central database as :func:`results.load` gives a workspace's.

    Rows of one workspace come in the order they were recorded there, workspace after
    workspace. With rows of several workspaces the frame is led by a ``workspace`` column
    (``HOST:PATH`` of each; a path whose workspace was made anew gets ``#`` and the start of
    its id), as for ``results.load([...])``; with one, there is none, as for ``results.load(WS)``.
    Raises :class:`CentralDbError` when the database cannot be read.
    """
    from sqlalchemy import inspect, select

    from results.loaded_frame import frame_of_rows, pandas_dtypes

    try:
        with _engine(url).connect() as conn:
            if not inspect(conn).has_table(TABLE):
                found: Sequence[Any] = []
            else:
                version = conn.execute(select(_version_table().c.version)).scalar_one()
                if version > len(CENTRAL_MIGRATIONS):
                    raise CentralDbError(f"{shown(url)}: schema version {version} was made by a newer "
                                         f"prunesweep (this one knows up to version {len(CENTRAL_MIGRATIONS)})")
                table = _table()
                found = conn.execute(select(table.c.workspace_id, table.c.workspace,
                                            *(table.c[name] for name in COLUMNS))
                                     .order_by(table.c.workspace, table.c.workspace_id, table.c.row_number)).all()
    except CentralDbError:
        raise
    except Exception as error:
        raise CentralDbError(f"{shown(url)}: {_reason(error, url)}") from None
    try:
        frame = frame_of_rows([tuple(row[2:]) for row in found])
    except (TypeError, ValueError) as error:  # a value no column type takes (a shared SQLite file edited by hand)
        raise CentralDbError(f"{shown(url)}: a value of the wrong type in {TABLE} ({error})") from None
    ids = [row[0] for row in found]
    if len(set(ids)) > 1:
        labels = [row[1] for row in found]
        ids_of: dict[str, set[str]] = {}
        for ident, label in zip(ids, labels, strict=True):
            ids_of.setdefault(label, set()).add(ident)
        names = [label if len(ids_of[label]) == 1 else f"{label}#{ident[:8]}"
                 for ident, label in zip(ids, labels, strict=True)]
        frame.insert(0, "workspace", _text_series(names, pandas_dtypes()[0], frame.index))
    return frame


def _text_series(values: list[str], dtype, index):
    """A text column of the loaded frame."""
    import pandas as pd

    return pd.Series(values, dtype=dtype, index=index)


__all__ = ["ALLOWED_URLS", "CENTRAL_MIGRATIONS", "parse", "CentralDbError", "DatabaseUrl", "KEY", "STATE_FILE", "TABLE",
           "VERSION_TABLE", "check_url", "describe", "load", "push", "redact", "schema_version", "shown", "target",
           "waiting", "workspace_id"]
