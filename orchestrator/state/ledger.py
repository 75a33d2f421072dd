"""The SQLite ledger of a workspace: every stage's state, and the cells of every sweep.

States: ``planned``, ``running``, ``done``, ``failed``, ``blocked``, ``cancelled`` (stopped
on the user's request, ``prunesweep cancel --stage``: ``resume`` reruns it). The ledger is a
cache of what the artifacts say: :mod:`orchestrator.state.reconcile` corrects it from disk
(a checksummed artifact is done whatever the ledger says).

The ledger carries a schema version (:mod:`results.versioned_sqlite`): a writer's
:class:`Ledger` brings an older file to the current version in place (:data:`MIGRATIONS`,
one transaction), and the workspace's results table with it; a reader's (``reading=True``:
``status``, ``results``) never changes an
older file: it works on an upgraded in-memory copy, so whatever it corrects is forgotten.
"""
from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from orchestrator.errors import UserError
from orchestrator.planning.stage_identity import Cell, Stage
from orchestrator.state.store_health import must_not_write
from results.versioned_sqlite import (
    Migration,
    StoreVersionError,
    open_for_reading,
    open_for_writing,
    schema_version,
    sql,
)
from workers.stages.paths import LEDGER_FILE

#: state changes queued by :meth:`Ledger.batched` are written at most this many at a time.
BATCH_ROWS = 2000
STATES = ("planned", "running", "done", "failed", "blocked", "cancelled")

#: The ledger of the unversioned code (version 0); version 1 adopts it as it is.
_FIRST_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS stages (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    label TEXT NOT NULL,
    epochs REAL NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_class TEXT,
    error_message TEXT,
    started_at REAL,
    ended_at REAL,
    host TEXT,
    pid INTEGER,
    backend TEXT,
    job_id TEXT
)""",
    """CREATE TABLE IF NOT EXISTS deps (
    key TEXT NOT NULL,
    role TEXT NOT NULL,
    dep_key TEXT NOT NULL,
    PRIMARY KEY (key, role)
)""",
    """CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    settings TEXT NOT NULL,
    spec TEXT NOT NULL,
    launched_at REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS verified (
    key TEXT PRIMARY KEY,
    stamps TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS cells (
    sweep TEXT NOT NULL,
    mask_source TEXT NOT NULL,
    init TEXT NOT NULL,
    rewind TEXT NOT NULL,
    rewind_iteration INTEGER,
    nominal_fraction REAL NOT NULL,
    level INTEGER,
    seed INTEGER NOT NULL,
    stage_key TEXT NOT NULL,
    PRIMARY KEY (sweep, mask_source, init, rewind, nominal_fraction, seed)
)""",
)

#: Transfer evaluations get a ``transfer`` column (part of the cell's identity: '' on the
#: pruning grid, since NULLs never collide in a primary key) and the init ``pretrained``.
#: SQLite cannot change a primary key in place, so the table is rebuilt.
_TRANSFER_COLUMN = (
    """CREATE TABLE cells_v2 (
    sweep TEXT NOT NULL,
    mask_source TEXT NOT NULL,
    init TEXT NOT NULL,
    transfer TEXT NOT NULL DEFAULT '',
    rewind TEXT NOT NULL,
    rewind_iteration INTEGER,
    nominal_fraction REAL NOT NULL,
    level INTEGER,
    seed INTEGER NOT NULL,
    stage_key TEXT NOT NULL,
    PRIMARY KEY (sweep, mask_source, init, transfer, rewind, nominal_fraction, seed)
)""",
    """INSERT INTO cells_v2 (sweep, mask_source, init, transfer, rewind, rewind_iteration, nominal_fraction,
                          level, seed, stage_key)
    SELECT sweep, mask_source,
           CASE WHEN init IN ('linear', 'finetune', 'finetune_prune_during') THEN 'pretrained' ELSE init END,
           CASE WHEN init IN ('linear', 'finetune', 'finetune_prune_during') THEN init ELSE '' END,
           rewind, rewind_iteration, nominal_fraction, level, seed, stage_key
    FROM cells ORDER BY rowid""",
    "DROP TABLE cells",
    "ALTER TABLE cells_v2 RENAME TO cells",
)

#: Automatic retries (:mod:`orchestrator.backends.failure_classes`): one line per failed attempt a stage
#: was retried after, so ``status`` still shows them once a later attempt succeeded.
_RETRIED_COLUMN = ("ALTER TABLE stages ADD COLUMN retried TEXT",)

#: The driver ingests one finished stage's results row by its key: an index finds its cells
#: without reading the whole table (issue 16).
_CELLS_BY_STAGE = ("CREATE INDEX IF NOT EXISTS cells_by_stage ON cells (stage_key)",)

#: A reading command glances at a done stage's folder (:mod:`orchestrator.state.artifact_stamps`): the
#: folder's stamp is kept in two integer columns, read for a whole workspace without decoding JSON.
_FOLDER_STAMP = ("ALTER TABLE verified ADD COLUMN folder_mtime_ns INTEGER",
                 "ALTER TABLE verified ADD COLUMN folder_ino INTEGER")

#: ``MIGRATIONS[i]`` takes a ledger from version i to i + 1. Append only.
MIGRATIONS: tuple[Migration, ...] = (
    sql(*_FIRST_SCHEMA),
    sql(*_TRANSFER_COLUMN),
    sql(*_RETRIED_COLUMN),
    sql(*_CELLS_BY_STAGE),
    sql(*_FOLDER_STAMP),
)

_CELL_COLUMNS = ("sweep", "mask_source", "init", "transfer", "rewind", "rewind_iteration", "nominal_fraction",
                 "level", "seed", "stage_key")
#: cells as callers see them: ``transfer`` is None on the pruning grid.
_SELECT_CELLS = ("SELECT sweep, mask_source, init, NULLIF(transfer, '') AS transfer, rewind, rewind_iteration, "
                 "nominal_fraction, level, seed, stage_key FROM cells")
_INSERT_CELL = (f"INSERT OR REPLACE INTO cells ({', '.join(_CELL_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _CELL_COLUMNS)})")


class Ledger:
    """A connection to ``WORKSPACE/ledger.sqlite``.

    ``reading=True`` (reading commands): an existing ledger of an older version is read
    through an upgraded in-memory copy and never written (:attr:`writes_persist` is then
    False); a current one is opened in place as for a writer.
    """

    def __init__(self, workspace: Path, create: bool = True, reading: bool = False):
        self.workspace = Path(workspace)
        path = self.workspace / LEDGER_FILE
        if not create and not path.exists():
            raise FileNotFoundError(path)
        try:
            # a workspace the reader may not write, or whose lock a run holds, is read through a copy
            connection = open_for_reading(path, MIGRATIONS, copy=must_not_write(self.workspace)) if reading else None
            #: whether what this ledger records reaches the file (False for a reader's copy).
            self.writes_persist = connection is None or _is_file_backed(connection)
            if connection is None:
                connection = open_for_writing(path, MIGRATIONS)
                try:
                    from results.table import upgrade  # pandas, only when a writer opens the workspace

                    upgrade(self.workspace)  # a writer upgrades the workspace's two stores together
                except BaseException:
                    connection.close()
                    raise
        except StoreVersionError as error:
            raise UserError(str(error)) from None
        self.connection = connection
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA busy_timeout=60000")
        #: state changes held back by :meth:`batched`, written together by :meth:`flush`.
        self._queued: Optional[list[tuple[str, tuple]]] = None

    @property
    def version(self) -> int:
        """The schema version of the ledger this connection reads."""
        return schema_version(self.connection)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    def _write(self, statement: str, parameters: tuple) -> None:
        """Run one state change now, or queue it while :meth:`batched` is in effect."""
        if self._queued is None:
            self.connection.execute(statement, parameters)
            return
        self._queued.append((statement, parameters))
        if len(self._queued) >= BATCH_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the queued state changes in one transaction (a no-op when none is queued)."""
        if not self._queued:
            return
        queued, self._queued = self._queued, []
        with self.transaction() as db:
            for statement, run in itertools.groupby(queued, key=lambda change: change[0]):
                db.executemany(statement, [parameters for _, parameters in run])  # in order, a run at a time

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Queue state changes and write them in transactions of up to :data:`BATCH_ROWS`.

        A command that corrects thousands of stages (the first ``status`` after a cluster
        finished them) then commits a few times instead of once per stage; no write lock is
        held between the flushes, so a driver working in the same workspace is not held up.
        """
        if self._queued is not None:
            yield
            return
        self._queued = []
        try:
            yield
        finally:
            try:
                self.flush()
            finally:
                self._queued = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            if self.connection.in_transaction:  # SQLite already rolled back after a full disk or an I/O error
                self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    # ---- sweeps and stages -----------------------------------------------------------
    def sweep_settings(self, name: str) -> Optional[str]:
        """The settings fingerprint a sweep name was first launched with, if any."""
        row = self.connection.execute("SELECT settings FROM sweeps WHERE name = ?", (name,)).fetchone()
        return row["settings"] if row else None

    def register(self, sweep: str, source: str, settings: str, spec: dict, stages: Iterable[Stage],
                 cells: Iterable[Cell]) -> None:
        """Record a sweep, its stages (new ones as planned) and its cells."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sweeps (name, source, settings, spec, launched_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET source = excluded.source, spec = excluded.spec, "
                "launched_at = excluded.launched_at",
                (sweep, source, settings, json.dumps(spec), time.time()),
            )
            stages = list(stages)
            db.executemany(
                "INSERT OR IGNORE INTO stages (key, kind, label, epochs, state) VALUES (?, ?, ?, ?, 'planned')",
                [(stage.key, stage.kind, stage.label, stage.epochs) for stage in stages],
            )
            db.executemany(
                "INSERT OR IGNORE INTO deps (key, role, dep_key) VALUES (?, ?, ?)",
                [(stage.key, role, dep) for stage in stages for role, dep in stage.deps.items()],
            )
            db.executemany(
                _INSERT_CELL,
                [(sweep, c.mask_source, c.init, c.transfer or "", c.rewind, c.rewind_iteration, c.nominal_fraction,
                  c.level, c.seed, c.stage_key) for c in cells],
            )

    def stages(self, keys: Optional[Iterable[str]] = None) -> list[sqlite3.Row]:
        """All stage rows, or those with the given keys."""
        rows = self.connection.execute("SELECT * FROM stages ORDER BY rowid").fetchall()
        if keys is None:
            return rows
        wanted = set(keys)
        return [row for row in rows if row["key"] in wanted]

    def stage_states(self) -> list[tuple[str, str]]:
        """``(key, state)`` of every stage in planning order: the one pass over a whole workspace."""
        cursor = self.connection.cursor()
        cursor.row_factory = None  # plain tuples: tens of thousands of rows
        return cursor.execute("SELECT key, state FROM stages ORDER BY rowid").fetchall()

    def stages_in(self, states: Iterable[str]) -> list[sqlite3.Row]:
        """The rows of the stages in one of ``states``, in planning order."""
        wanted = tuple(states)
        return self.connection.execute(
            f"SELECT * FROM stages WHERE state IN ({', '.join('?' for _ in wanted)}) ORDER BY rowid", wanted).fetchall()

    def state_counts(self) -> dict[tuple[str, str], int]:
        """``(kind, state) -> number of stages``."""
        return {(kind, state): count for kind, state, count in
                self.connection.execute("SELECT kind, state, COUNT(*) FROM stages GROUP BY kind, state")}

    def stages_of_note(self) -> list[sqlite3.Row]:
        """The rows ``status`` lists one by one: stages not done, or retried, or with an error noted."""
        return self.connection.execute(
            "SELECT * FROM stages WHERE state != 'done' OR retried IS NOT NULL OR error_class IS NOT NULL "
            "ORDER BY rowid").fetchall()

    def deps(self) -> dict[str, dict[str, str]]:
        """key -> {role: dependency key} for every stage."""
        graph: dict[str, dict[str, str]] = {}
        for row in self.connection.execute("SELECT key, role, dep_key FROM deps"):
            graph.setdefault(row["key"], {})[row["role"]] = row["dep_key"]
        return graph

    def deps_of(self, key: str) -> dict[str, str]:
        """{role: dependency key} of one stage (read by key, not the whole table)."""
        rows = self.connection.execute("SELECT role, dep_key FROM deps WHERE key = ?", (key,))
        return {row["role"]: row["dep_key"] for row in rows}

    def cells_of(self, stage_keys: Iterable[str]) -> list[sqlite3.Row]:
        """The cells whose stage is one of ``stage_keys`` (read through the index on ``stage_key``)."""
        keys = sorted(set(stage_keys))
        found: list[sqlite3.Row] = []
        for start in range(0, len(keys), 500):  # SQLite bounds the number of parameters of one statement
            chunk = keys[start:start + 500]
            found += self.connection.execute(
                f"{_SELECT_CELLS} WHERE stage_key IN ({', '.join('?' for _ in chunk)}) ORDER BY rowid", chunk
            ).fetchall()
        return found

    def sweep_spec(self, name: str) -> dict:
        """The settings (spec) a sweep was last launched with."""
        row = self.connection.execute("SELECT spec FROM sweeps WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(name)
        return json.loads(row["spec"])

    def cells(self, sweep: Optional[str] = None) -> list[sqlite3.Row]:
        """Grid cells of one sweep or of all (``transfer`` is None on the pruning grid)."""
        if sweep is None:
            return self.connection.execute(f"{_SELECT_CELLS} ORDER BY rowid").fetchall()
        return self.connection.execute(f"{_SELECT_CELLS} WHERE sweep = ? ORDER BY rowid", (sweep,)).fetchall()

    def unfinished_cells(self) -> list[sqlite3.Row]:
        """The cells whose stage is not done, each with its stage's ``state`` (None for an unknown stage)."""
        columns = ", ".join(f"c.{name}" for name in _CELL_COLUMNS if name != "transfer")
        return self.connection.execute(
            f"SELECT {columns}, NULLIF(c.transfer, '') AS transfer, s.state AS state FROM cells AS c "
            "LEFT JOIN stages AS s ON s.key = c.stage_key WHERE s.state IS NOT 'done' ORDER BY c.rowid").fetchall()

    def cell_count(self) -> int:
        """The number of cells of every sweep."""
        return self.connection.execute("SELECT COUNT(*) FROM cells").fetchone()[0]

    def sweeps(self) -> list[sqlite3.Row]:
        """The sweeps launched in this workspace."""
        return self.connection.execute("SELECT * FROM sweeps ORDER BY launched_at").fetchall()

    # ---- verification stamps (orchestrator.state.artifact_stamps) ---------------------------------
    def verified_stamps(self, key: str) -> Optional[dict[str, list[int]]]:
        """The file stamps recorded when stage ``key``'s artifacts last hashed right, if any."""
        row = self.connection.execute("SELECT stamps FROM verified WHERE key = ?", (key,)).fetchone()
        return json.loads(row["stamps"]) if row else None

    def all_verified_stamps(self) -> dict[str, dict[str, list[int]]]:
        """key -> recorded stamps of every stage that has some (one query for a whole workspace)."""
        return {key: json.loads(stamps) for key, stamps in self.connection.execute("SELECT key, stamps FROM verified")}

    def all_folder_stamps(self) -> dict[str, tuple[int, int]]:
        """key -> ``(mtime_ns, inode)`` of the stage folders stamped when their artifacts last hashed right."""
        cursor = self.connection.cursor()
        cursor.row_factory = None  # plain tuples: tens of thousands of rows
        return {key: (mtime, ino) for key, mtime, ino in cursor.execute(
            "SELECT key, folder_mtime_ns, folder_ino FROM verified WHERE folder_mtime_ns IS NOT NULL")}

    def set_verified_stamps(self, key: str, stamps: Optional[dict[str, list[int]]],
                            folder: Optional[tuple[int, int]] = None) -> None:
        """Record (or with ``None`` forget) the stamps of stage ``key``'s verified artifacts, and of its folder."""
        if stamps is None:
            self._write("DELETE FROM verified WHERE key = ?", (key,))
        else:
            self._write("INSERT OR REPLACE INTO verified (key, stamps, folder_mtime_ns, folder_ino) "
                        "VALUES (?, ?, ?, ?)", (key, json.dumps(stamps, sort_keys=True), *(folder or (None, None))))

    def set_folder_stamp(self, key: str, folder: tuple[int, int]) -> None:
        """Record the stamp of stage ``key``'s folder, whose artifacts' stamps were just found unchanged."""
        self._write("UPDATE verified SET folder_mtime_ns = ?, folder_ino = ? WHERE key = ?", (*folder, key))

    # ---- state changes ---------------------------------------------------------------
    def mark_running(self, key: str, host: str, pid: Optional[int], backend: str, job_id: Optional[str] = None) -> None:
        """A stage started (one more attempt)."""
        self._write(
            "UPDATE stages SET state = 'running', attempts = attempts + 1, started_at = ?, ended_at = NULL, "
            "host = ?, pid = ?, backend = ?, job_id = ?, error_class = NULL, error_message = NULL WHERE key = ?",
            (time.time(), host, pid, backend, job_id, key),
        )

    def mark_done(self, key: str) -> None:
        """A stage's checksummed artifacts exist."""
        self._write(
            "UPDATE stages SET state = 'done', ended_at = COALESCE(ended_at, ?), error_class = NULL, "
            "error_message = NULL "
            "WHERE key = ?",
            (time.time(), key),
        )

    def mark_failed(self, key: str, error_class: str, message: str) -> None:
        """A stage raised or its process died."""
        self._write(
            "UPDATE stages SET state = 'failed', ended_at = ?, error_class = ?, error_message = ? WHERE key = ?",
            (time.time(), error_class, message, key),
        )

    def mark_blocked(self, key: str, because_of: str, cancelled: bool = False) -> None:
        """A stage cannot run because a dependency failed (``cancelled``: was cancelled)."""
        error_class, why = ("DependencyCancelled", "was cancelled") if cancelled else ("DependencyFailed",
                                                                                        "did not finish")
        self._write(
            "UPDATE stages SET state = 'blocked', error_class = ?, error_message = ? WHERE key = ?",
            (error_class, f"dependency {because_of} {why}", key),
        )

    def mark_cancelled(self, key: str, reason: str) -> None:
        """A running stage was stopped on the user's request; ``reason`` says by whom and how."""
        self._write(
            "UPDATE stages SET state = 'cancelled', ended_at = ?, error_class = 'Cancelled', error_message = ? "
            "WHERE key = ?",
            (time.time(), reason, key),
        )

    def mark_planned_many(self, keys: Iterable[str]) -> None:
        """:meth:`mark_planned` without a note for every stage of ``keys``, in one transaction."""
        with self.batched():
            for key in keys:
                self.mark_planned(key)

    def mark_held(self, key: str, host: str, pid: Optional[int]) -> None:
        """A live process holds the stage's lock (:mod:`workers.stages.lock`): it is running, there."""
        self._write(
            "UPDATE stages SET state = 'running', host = ?, pid = ?, ended_at = NULL WHERE key = ?", (host, pid, key))

    def note_retry(self, key: str, line: str) -> None:
        """A failed attempt of the stage will be retried automatically: keep a line saying why."""
        self._write(
            "UPDATE stages SET retried = COALESCE(retried || char(10), '') || ? WHERE key = ?", (line, key))

    def set_job_retries(self, key: str, job_id: str, failures: list[tuple[str, str]]) -> None:
        """The failed attempts job ``job_id`` retried by itself, each ``(where, what)``: kept as
        ``attempt N (job J where): what`` lines replacing those of that job already kept, and counted
        as attempts once, however often the same record is read (see :func:`.reconcile.reconcile`)."""
        rows = self.stages([key])
        if not rows:
            return
        kept = (rows[0]["retried"] or "").splitlines()
        mine = f"(job {job_id} "
        others = [line for line in kept if mine not in line]
        first = rows[0]["attempts"] - (len(kept) - len(others))  # the job's first attempt
        lines = [f"attempt {first + n} (job {job_id} {where}): {what}" for n, (where, what) in enumerate(failures)]
        self._write("UPDATE stages SET retried = ?, attempts = ? WHERE key = ?",
                    ("\n".join(others + lines) or None, first + len(lines), key))

    def mark_planned(self, key: str, error_class: Optional[str] = None, message: Optional[str] = None) -> None:
        """Back to planned (to be run), keeping a note of why when there is one."""
        self._write(
            "UPDATE stages SET state = 'planned', error_class = ?, error_message = ?, pid = NULL WHERE key = ?",
            (error_class, message, key),
        )


def _is_file_backed(connection: sqlite3.Connection) -> bool:
    """Whether ``connection`` reads the ledger file itself (not an in-memory copy)."""
    return any(row[2] for row in connection.execute("PRAGMA database_list") if row[1] == "main")
