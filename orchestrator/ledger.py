"""The SQLite ledger of a workspace: every stage's state, and the cells of every sweep.

States: ``planned``, ``running``, ``done``, ``failed``, ``blocked``. The ledger is a
cache of what the artifacts say: :mod:`orchestrator.reconcile` corrects it from disk
(a checksummed artifact is done whatever the ledger says).
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from .stage_identity import Cell, Stage

LEDGER_FILE = "ledger.sqlite"
STATES = ("planned", "running", "done", "failed", "blocked")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stages (
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
);
CREATE TABLE IF NOT EXISTS deps (
    key TEXT NOT NULL,
    role TEXT NOT NULL,
    dep_key TEXT NOT NULL,
    PRIMARY KEY (key, role)
);
CREATE TABLE IF NOT EXISTS sweeps (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    settings TEXT NOT NULL,
    spec TEXT NOT NULL,
    launched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS verified (
    key TEXT PRIMARY KEY,
    stamps TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
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
);
"""


class Ledger:
    """A connection to ``WORKSPACE/ledger.sqlite``."""

    def __init__(self, workspace: Path, create: bool = True):
        self.workspace = Path(workspace)
        path = self.workspace / LEDGER_FILE
        if not create and not path.exists():
            raise FileNotFoundError(path)
        self.connection = sqlite3.connect(path, timeout=60, isolation_level=None)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA busy_timeout=60000")
        self.connection.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield self.connection
        except BaseException:
            self.connection.execute("ROLLBACK")
            raise
        self.connection.execute("COMMIT")

    # ---- sweeps and stages -----------------------------------------------------------
    def sweep_settings(self, name: str) -> Optional[str]:
        """The settings fingerprint a sweep name was first launched with, if any."""
        row = self.connection.execute("SELECT settings FROM sweeps WHERE name = ?", (name,)).fetchone()
        return row["settings"] if row else None

    def register(self, sweep: str, source: str, settings: str, spec: dict, stages: Iterable[Stage], cells: Iterable[Cell]) -> None:
        """Record a sweep, its stages (new ones as planned) and its cells."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO sweeps (name, source, settings, spec, launched_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET source = excluded.source, spec = excluded.spec, launched_at = excluded.launched_at",
                (sweep, source, settings, json.dumps(spec), time.time()),
            )
            for stage in stages:
                db.execute(
                    "INSERT OR IGNORE INTO stages (key, kind, label, epochs, state) VALUES (?, ?, ?, ?, 'planned')",
                    (stage.key, stage.kind, stage.label, stage.epochs),
                )
                db.executemany(
                    "INSERT OR IGNORE INTO deps (key, role, dep_key) VALUES (?, ?, ?)",
                    [(stage.key, role, dep) for role, dep in stage.deps.items()],
                )
            db.executemany(
                "INSERT OR REPLACE INTO cells VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(sweep, c.mask_source, c.init, c.rewind, c.rewind_iteration, c.nominal_fraction, c.level, c.seed, c.stage_key)
                 for c in cells],
            )

    def stages(self, keys: Optional[Iterable[str]] = None) -> list[sqlite3.Row]:
        """All stage rows, or those with the given keys."""
        rows = self.connection.execute("SELECT * FROM stages ORDER BY rowid").fetchall()
        if keys is None:
            return rows
        wanted = set(keys)
        return [row for row in rows if row["key"] in wanted]

    def deps(self) -> dict[str, dict[str, str]]:
        """key -> {role: dependency key} for every stage."""
        graph: dict[str, dict[str, str]] = {}
        for row in self.connection.execute("SELECT key, role, dep_key FROM deps"):
            graph.setdefault(row["key"], {})[row["role"]] = row["dep_key"]
        return graph

    def cells(self, sweep: Optional[str] = None) -> list[sqlite3.Row]:
        """Grid cells of one sweep or of all."""
        if sweep is None:
            return self.connection.execute("SELECT * FROM cells ORDER BY rowid").fetchall()
        return self.connection.execute("SELECT * FROM cells WHERE sweep = ? ORDER BY rowid", (sweep,)).fetchall()

    def sweeps(self) -> list[sqlite3.Row]:
        """The sweeps launched in this workspace."""
        return self.connection.execute("SELECT * FROM sweeps ORDER BY launched_at").fetchall()

    # ---- verification stamps (orchestrator.artifact_stamps) ---------------------------------
    def verified_stamps(self, key: str) -> Optional[dict[str, list[int]]]:
        """The file stamps recorded when stage ``key``'s artifacts last hashed right, if any."""
        row = self.connection.execute("SELECT stamps FROM verified WHERE key = ?", (key,)).fetchone()
        return json.loads(row["stamps"]) if row else None

    def set_verified_stamps(self, key: str, stamps: Optional[dict[str, list[int]]]) -> None:
        """Record (or with ``None`` forget) the stamps of stage ``key``'s verified artifacts."""
        if stamps is None:
            self.connection.execute("DELETE FROM verified WHERE key = ?", (key,))
        else:
            self.connection.execute("INSERT OR REPLACE INTO verified (key, stamps) VALUES (?, ?)",
                                    (key, json.dumps(stamps, sort_keys=True)))

    # ---- state changes ---------------------------------------------------------------
    def mark_running(self, key: str, host: str, pid: Optional[int], backend: str, job_id: Optional[str] = None) -> None:
        """A stage started (one more attempt)."""
        self.connection.execute(
            "UPDATE stages SET state = 'running', attempts = attempts + 1, started_at = ?, ended_at = NULL, "
            "host = ?, pid = ?, backend = ?, job_id = ?, error_class = NULL, error_message = NULL WHERE key = ?",
            (time.time(), host, pid, backend, job_id, key),
        )

    def mark_done(self, key: str) -> None:
        """A stage's checksummed artifacts exist."""
        self.connection.execute(
            "UPDATE stages SET state = 'done', ended_at = COALESCE(ended_at, ?), error_class = NULL, error_message = NULL "
            "WHERE key = ?",
            (time.time(), key),
        )

    def mark_failed(self, key: str, error_class: str, message: str) -> None:
        """A stage raised or its process died."""
        self.connection.execute(
            "UPDATE stages SET state = 'failed', ended_at = ?, error_class = ?, error_message = ? WHERE key = ?",
            (time.time(), error_class, message, key),
        )

    def mark_blocked(self, key: str, because_of: str) -> None:
        """A stage cannot run because a dependency failed."""
        self.connection.execute(
            "UPDATE stages SET state = 'blocked', error_class = 'DependencyFailed', error_message = ? WHERE key = ?",
            (f"dependency {because_of} did not finish", key),
        )

    def mark_planned(self, key: str, error_class: Optional[str] = None, message: Optional[str] = None) -> None:
        """Back to planned (to be run), keeping a note of why when there is one."""
        self.connection.execute(
            "UPDATE stages SET state = 'planned', error_class = ?, error_message = ?, pid = NULL WHERE key = ?",
            (error_class, message, key),
        )
