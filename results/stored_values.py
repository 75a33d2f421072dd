"""Values of the wrong type in a results table: text where a number belongs (a file edited by hand
or by another program; SQLite keeps whatever it is given where the value does not convert).

SQLite's header and ``PRAGMA quick_check`` cannot see them, so they are looked for with ``typeof``
only when the rows do not convert to the loaded frame's types (:func:`results.table.load`), and by
``prunesweep repair``, which moves such a table aside (:func:`misplaced_value`).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, Optional, TypeVar

from results.row import COLUMN_TYPES

#: the SQLite storage classes each declared type of a results column holds (NULL aside).
ACCEPTED = {"TEXT": ("text",), "INTEGER": ("integer",), "REAL": ("real", "integer")}
T = TypeVar("T")
_EXPECTED = {"TEXT": "text", "INTEGER": "an integer", "REAL": "a number"}


class MisplacedValue(ValueError):
    """A column of a results table holds a value its type does not take; names the file and the column."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def first_misplaced(conn: sqlite3.Connection, table: str,
                    columns: Mapping[str, str] = COLUMN_TYPES) -> Optional[str]:
    """What the first column of ``table`` holding a value of another type holds, in words; None if none does."""
    present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for column, sqltype in columns.items():
        if column not in present:
            continue
        accepted = ", ".join(f"'{name}'" for name in ("null", *ACCEPTED[sqltype]))
        found = conn.execute(f"SELECT rowid, {column}, typeof({column}) FROM {table} "
                             f"WHERE typeof({column}) NOT IN ({accepted}) LIMIT 1").fetchone()
        if found is not None:
            return (f"column {column} holds {_shown(found[1])} (SQLite {found[2]}) in row {found[0]}, "
                    f"where {_EXPECTED[sqltype]} belongs")
    return None


def misplaced_value(path: Path) -> Optional[str]:
    """:func:`first_misplaced` of the results table of the store at ``path`` (read only); None when
    it is absent or cannot be read (what else is wrong with it is said elsewhere)."""
    from results.migrations import MIGRATIONS, TABLE
    from results.versioned_sqlite import StoreVersionError, open_for_reading

    try:
        conn = open_for_reading(Path(path), MIGRATIONS)
        if conn is None:
            return None
        with closing(conn):
            return first_misplaced(conn, TABLE)
    except (sqlite3.DatabaseError, StoreVersionError):
        return None


def frame_naming_misplaced(make_frame: Callable[[list[tuple], Sequence[str]], T], rows: list[tuple],
                           columns: Sequence[str], paths: Sequence[Path]) -> T:
    """``make_frame(rows, columns)``; when the rows do not convert (the frame's types refuse a value),
    :class:`MisplacedValue` naming the first of the stores at ``paths`` (where they were read) that
    holds a value of the wrong type, and the column."""
    try:
        return make_frame(rows, columns)
    except (TypeError, ValueError):
        for path in paths:
            problem = misplaced_value(path)
            if problem:
                raise MisplacedValue(path, problem) from None
        raise


def _shown(value: Any) -> str:
    """A stored value as a message quotes it: at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
