"""SQLite stores with a schema version and an ordered list of migrations.

A store's version is SQLite's ``PRAGMA user_version`` (0 in a new file and in every file
made before stores were versioned). ``migrations[i]`` takes a store from version ``i`` to
``i + 1``, so the version of a store is the number of migrations applied to it and a new
store is made by applying them all, the same path an old one takes.

Who migrates: the first *writer* that opens the store (:func:`open_for_writing`) applies
the missing migrations in place, in one ``BEGIN IMMEDIATE`` transaction together with the
new ``user_version``, so a crash or a concurrent writer sees the old store or the new one,
never half of one. *Readers* never write: :func:`open_for_reading` reads a store of the
current version directly and an older one through a private in-memory copy upgraded by
the same migrations, so every reading function sees one schema and the file on disk is
left byte-identical. A store of a version newer than the migrations list is refused with
:class:`StoreVersionError` naming the file.
"""
from __future__ import annotations

import sqlite3
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, TypeVar

#: One step of a store's schema: it changes the store from its version to the next one
#: inside the caller's transaction, so it must not commit (no ``executescript``).
Migration = Callable[[sqlite3.Connection], None]

BUSY_TIMEOUT_S = 60.0

T = TypeVar("T")


class StoreVersionError(RuntimeError):
    """A store made by a newer prunesweep (its schema version is unknown here)."""


def sql(*statements: str) -> Migration:
    """A migration made of SQL statements, run in order in the migration's transaction."""
    def run(conn: sqlite3.Connection) -> None:
        for statement in statements:
            conn.execute(statement)
    return run


def schema_version(conn: sqlite3.Connection) -> int:
    """The store's ``PRAGMA user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(version: int, path: Path, migrations: Sequence[Migration]) -> None:
    """Refuse a store whose version is beyond the last migration known here."""
    if version > len(migrations):
        raise StoreVersionError(
            f"{path}: schema version {version} was made by a newer prunesweep (this one reads up to "
            f"version {len(migrations)}); upgrade prunesweep to open this workspace")


def migrate(conn: sqlite3.Connection, path: Path, migrations: Sequence[Migration]) -> int:
    """Apply the missing migrations and set the new version in one transaction; return the version.

    The version is read again inside the transaction, so two writers opening an old store
    at once migrate it once. ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    if schema_version(conn) == len(migrations):
        return len(migrations)
    with_retry(lambda: conn.execute("BEGIN IMMEDIATE"))
    try:
        version = schema_version(conn)
        check_version(version, path, migrations)
        for step in migrations[version:]:
            step(conn)
        conn.execute(f"PRAGMA user_version = {len(migrations)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite already rolled back after a full disk or an I/O error
            conn.execute("ROLLBACK")
        raise
    return len(migrations)


class _StoreConnection(sqlite3.Connection):
    """A connection to a store's file, known to :func:`close_all` until it is garbage."""


_OPEN: weakref.WeakSet[_StoreConnection] = weakref.WeakSet()


def _connect(database: str | Path, **options) -> sqlite3.Connection:
    conn = sqlite3.connect(database, factory=_StoreConnection, **options)
    _OPEN.add(conn)
    return conn


def close_all() -> None:
    """Close every store connection of this process that is still open.

    A process that ends without the interpreter's teardown (``os._exit``: ``plan``, ``results`` and
    ``report``) would leave a WAL store it still holds with its -wal/-shm files.
    """
    for conn in list(_OPEN):
        conn.close()


def open_for_writing(path: Path, migrations: Sequence[Migration]) -> sqlite3.Connection:
    """Open (creating if needed) the store in WAL mode and bring it to the current version."""
    conn = _connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        check_version(schema_version(conn), path, migrations)
        mode = with_retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
        if mode is None or str(mode[0]).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: could not switch to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = NORMAL")
        migrate(conn, path, migrations)
    except BaseException:
        conn.close()
        raise
    return conn


def open_for_reading(path: Path, migrations: Sequence[Migration],
                     copy: bool = False) -> Optional[sqlite3.Connection]:
    """A connection that reads the store at the current version without writing it; None if absent.

    A store of the current version is opened in place (unless ``copy``: one the reader may not
    or must not write); an older one is copied into memory (SQLite's backup API: one
    consistent snapshot even while a writer works) and that copy is migrated. The copy takes
    the store's size in memory, which the ledger and the results table (rows of text and
    numbers, no artifacts) keep small.
    """
    if not path.is_file():
        return None
    conn = _open_existing(path)
    try:
        version = with_retry(lambda: schema_version(conn))
        check_version(version, path, migrations)
        if version == len(migrations) and not copy:
            return conn
        memory = sqlite3.connect(":memory:", isolation_level=None)
        with_retry(lambda: conn.backup(memory))
    except BaseException:
        conn.close()
        raise
    conn.close()
    try:
        migrate(memory, path, migrations)
    except BaseException:
        memory.close()
        raise
    return memory


def _open_existing(path: Path) -> sqlite3.Connection:
    """Open an existing store without creating it.

    ``mode=rw`` never creates the file, and as the last connection to close it folds the
    WAL back and removes the -wal/-shm files (a ``mode=ro`` connection leaves them behind);
    ``mode=ro`` is the fallback for a store we may not write to; ``immutable=1`` the last one,
    for a store in WAL mode that SQLite cannot give the shared-memory file a WAL reader needs
    (a colleague's workspace, a read-only snapshot, a full disk). It reads the database file as it is,
    without locks: a snapshot of what its owner last checkpointed.
    """
    modes = ("mode=rw", "mode=ro", "mode=ro&immutable=1")
    for mode in modes:
        uri = path.resolve().as_uri() + f"?{mode}"
        conn: Optional[sqlite3.Connection] = None
        try:
            conn = _connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except BaseException as error:
            if conn is not None:
                conn.close()
            text = str(error).lower()
            # "disk I/O error": SQLite could not make the -shm file (a full disk)
            if (not isinstance(error, sqlite3.OperationalError) or mode == modes[-1]
                    or not any(word in text for word in ("readonly", "unable to open", "disk i/o"))):
                raise
    raise AssertionError("unreachable")


def with_retry(action: Callable[[], T], attempts: int = 20) -> T:
    """Run ``action``, retrying briefly on 'database is locked' errors the busy handler misses.

    SQLite does not call the busy handler in a few cases (e.g. while another connection
    switches the journal mode or creates a table), so a short backoff covers them.
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


def table_columns(conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
    """The columns of ``table`` in order (empty when it does not exist)."""
    return tuple(info[1] for info in conn.execute(f"PRAGMA table_info({table})"))
