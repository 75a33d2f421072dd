"""The schema history of the central results database (:mod:`results.central_db`), one step per version.

``CENTRAL_MIGRATIONS[i]`` takes the central table from version ``i`` to ``i + 1`` inside the
pushing writer's transaction (under a lock on PostgreSQL). Append only, as for
:data:`results.migrations.MIGRATIONS`: a column added to :data:`results.row.ROW` takes a step
here too (``tests/unit/test_central_db_offline.py`` checks that the table has every column),
and each step spells out its own columns rather than reading the current row.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from results.row import PRIMARY_KEY

if TYPE_CHECKING:  # pragma: no cover
    from sqlalchemy.engine import Connection

#: the central table.
TABLE = "prunesweep_results"
#: a central row's key: the workspace's id and the row's key in its workspace.
KEY: tuple[str, ...] = ("workspace_id", *PRIMARY_KEY)


def sqltype(name: str):
    """The SQLAlchemy type of a results column of SQLite type ``name`` (TEXT, INTEGER, REAL)."""
    from sqlalchemy import BigInteger, Double, Text

    return {"TEXT": Text, "INTEGER": BigInteger, "REAL": Double}[name]


def _create_v1(conn: Connection) -> None:
    """Version 1: the results row of results.row as it was then (20 columns), keyed per workspace."""
    from sqlalchemy import BigInteger, Column, MetaData, PrimaryKeyConstraint, Table, Text

    v1 = {"sweep": "TEXT", "stage_key": "TEXT", "dataset": "TEXT", "arch": "TEXT", "mask_source": "TEXT",
          "init": "TEXT", "rewind": "TEXT", "rewind_iteration": "INTEGER", "level": "INTEGER",
          "nominal_fraction": "REAL", "measured_fraction": "REAL", "seed": "INTEGER", "top1": "REAL",
          "epochs": "INTEGER", "wall_time_s": "REAL", "recorded_at": "TEXT", "natural_sparsity": "REAL",
          "metric": "TEXT", "eval_dataset": "TEXT", "transfer": "TEXT"}
    columns: list[Any] = [Column("workspace_id", Text, nullable=False), Column("workspace", Text, nullable=False),
                          Column("row_number", BigInteger, nullable=False)]
    columns += [Column(name, sqltype(kind)) for name, kind in v1.items()]
    Table(TABLE, MetaData(), *columns, PrimaryKeyConstraint(*KEY)).create(conn)


def add_column(name: str, kind: str, *updates: str) -> Callable[[Connection], None]:
    """A step adding column ``name`` of SQLite type ``kind`` (as in :data:`results.row.ROW`), then
    running the SQL ``updates`` (which may move data, as results.migrations' steps do)."""
    def step(conn: Connection) -> None:
        from sqlalchemy import text

        conn.execute(text(f"ALTER TABLE {TABLE} ADD COLUMN {name} {sqltype(kind)().compile(dialect=conn.dialect)}"))
        for statement in updates:
            conn.execute(text(statement))
    return step


CENTRAL_MIGRATIONS: list[Callable[[Connection], None]] = [
    _create_v1,
    # 2: VOC07's 11-point mAP beside the benchmark's in top1; the rows pushed before held the 11-point
    # mAP in top1 and say so, as results.migrations' step 3 does in each workspace (issue 28)
    add_column("map_11point", "REAL", f"UPDATE {TABLE} SET map_11point = top1, metric = 'map_11point' "
                                      "WHERE metric = 'map' AND eval_dataset = 'voc07'"),
]
