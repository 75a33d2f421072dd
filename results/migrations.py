"""The schema history of the results table, one migration per version.

``MIGRATIONS[i]`` takes ``results.sqlite`` from version ``i`` to ``i + 1`` (see
:mod:`results.versioned_sqlite`). Append only: a migration that has shipped is never
edited, since stores in the field are at its version. Each one spells out its own SQL
rather than reading :data:`results.row.ROW`, which describes only the latest version.
"""
from __future__ import annotations

import sqlite3

from results.versioned_sqlite import Migration, sql, table_columns

#: the store of a workspace's results rows (as ``workers.stages.paths.RESULTS_FILE``: results imports nothing
#: from workers; ``tests/unit/test_stage_paths.py`` checks that they agree).
DB_FILE = "results.sqlite"
TABLE = "results"

_FIRST_SCHEMA = """CREATE TABLE IF NOT EXISTS results (
  sweep TEXT NOT NULL, stage_key TEXT NOT NULL, dataset TEXT NOT NULL, arch TEXT NOT NULL,
  mask_source TEXT NOT NULL, init TEXT NOT NULL, rewind TEXT NOT NULL, rewind_iteration INTEGER,
  level INTEGER, nominal_fraction REAL NOT NULL, measured_fraction REAL, seed INTEGER NOT NULL,
  top1 REAL NOT NULL, epochs INTEGER, wall_time_s REAL, recorded_at TEXT NOT NULL,
  PRIMARY KEY (sweep, mask_source, init, rewind, nominal_fraction, seed, stage_key)
)"""
#: columns the unversioned code added to a table of the first schema on its next write.
_UNVERSIONED_ADDITIONS = (("natural_sparsity", "REAL"), ("metric", "TEXT"), ("eval_dataset", "TEXT"))


def _adopt_unversioned(conn: sqlite3.Connection) -> None:
    """Version 1: the table of the unversioned code (no table, the first schema or the first + 3)."""
    conn.execute(_FIRST_SCHEMA)
    present = set(table_columns(conn, TABLE))
    for name, sqltype in _UNVERSIONED_ADDITIONS:
        if name not in present:
            conn.execute(f"ALTER TABLE {TABLE} ADD COLUMN {name} {sqltype}")


MIGRATIONS: tuple[Migration, ...] = (
    _adopt_unversioned,
    # 2: transfer evaluations get their own column instead of overloading init.
    sql("ALTER TABLE results ADD COLUMN transfer TEXT",
        "UPDATE results SET transfer = init, init = 'pretrained' "
        "WHERE init IN ('linear', 'finetune', 'finetune_prune_during')"),
    # 3: VOC07's devkit 11-point mAP beside the benchmark's, which top1 holds from now on; the rows
    # before held the 11-point mAP in top1 and say so (results.row.ELEVEN_POINT_BEFORE, issue 28).
    sql("ALTER TABLE results ADD COLUMN map_11point REAL",
        "UPDATE results SET map_11point = top1, metric = 'map_11point' "
        "WHERE metric = 'map' AND eval_dataset = 'voc07'"),
)
