"""The results row: its columns and types, how it is built from a finished grid cell, and how a
row given to :func:`results.record` is checked and converted to the column types (:func:`prepare_row`).

This is the one definition of a row of ``WORKSPACE/results.sqlite``. Adding a column is
one :class:`Column` appended to :data:`ROW` (and the ``build_row`` line that fills it)
plus one migration appended to :data:`results.migrations.MIGRATIONS`; see
``docs/extending/results-column.md``.

A row is built from three things the orchestrator reads: the cell (from the ledger), the
sweep's settings, the metrics of the stage that evaluated the cell (its ``DONE.json``)
and, for ``natural_sparsity``, the metrics of the dense run its mask comes from.
"""
from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

#: the ``rewind`` of a cell whose init needs no rewinding point (a random mask, re-initialised).
NO_REWIND = "-"


@dataclass(frozen=True)
class Column:
    """One column of the results table."""

    name: str
    #: SQLite type: TEXT, INTEGER or REAL.
    sqltype: str
    #: a row may leave it out (None); every column added after the first schema is optional.
    optional: bool = False


#: The columns in table order (a migration appends a column at the end, so a new one goes last).
ROW: tuple[Column, ...] = (
    Column("sweep", "TEXT"),
    Column("stage_key", "TEXT"),
    Column("dataset", "TEXT"),
    Column("arch", "TEXT"),
    Column("mask_source", "TEXT"),
    Column("init", "TEXT"),  # winning_ticket, reinit; pretrained for a transfer evaluation
    Column("rewind", "TEXT"),  # as written in the sweep: "0", "1ep", "500it"
    Column("rewind_iteration", "INTEGER"),
    Column("level", "INTEGER"),  # IMP round; NULL for one-shot pruning
    Column("nominal_fraction", "REAL"),
    Column("measured_fraction", "REAL"),
    Column("seed", "INTEGER"),
    Column("top1", "REAL"),
    Column("epochs", "INTEGER"),
    Column("wall_time_s", "REAL"),
    Column("recorded_at", "TEXT"),  # ISO 8601 time; filled in by record() when absent
    Column("natural_sparsity", "REAL", optional=True),  # fraction of prunable weights exactly zero after the dense run
    # what top1 holds: "top1" (default when NULL), "map" (on VOC07 the benchmark's mAP) or "map_11point"
    Column("metric", "TEXT", optional=True),
    Column("eval_dataset", "TEXT", optional=True),  # the dataset a transfer evaluation ran on; NULL: the sweep's
    Column("transfer", "TEXT", optional=True),  # linear, finetune, finetune_prune_during; NULL: the pruning grid
    # a multi-label target's (VOC07's) devkit 11-point mAP beside the benchmark's in top1; NULL elsewhere
    Column("map_11point", "REAL", optional=True),
)

COLUMNS: tuple[str, ...] = tuple(column.name for column in ROW)
COLUMN_TYPES: dict[str, str] = {column.name: column.sqltype for column in ROW}
#: Columns a row may leave out (None).
OPTIONAL: tuple[str, ...] = tuple(column.name for column in ROW if column.optional)
#: A row is identified by these columns; recording the same key again is a no-op.
PRIMARY_KEY: tuple[str, ...] = (
    "sweep", "mask_source", "init", "rewind", "nominal_fraction", "seed", "stage_key",
)
#: Columns every row must give (all but ``recorded_at``, which defaults to now, and the optional ones).
REQUIRED: tuple[str, ...] = tuple(c for c in COLUMNS if c != "recorded_at" and c not in OPTIONAL)
#: Columns that may not be None/NaN: the primary key plus what a result is about.
NOT_NULL: tuple[str, ...] = PRIMARY_KEY + ("dataset", "arch", "top1", "recorded_at")

#: the multi-label targets whose evaluations reported the devkit's 11-point mAP alone in ``top1``
#: (``metric: map``) before issue 28 made it the benchmark's: such rows say ``map_11point`` instead.
ELEVEN_POINT_BEFORE: tuple[str, ...] = ("voc07",)

#: the Python types of the values SQLite gives for each column type (None, for NULL, aside) ...
_TAKES: dict[str, tuple[type, ...]] = {"TEXT": (str,), "INTEGER": (int,), "REAL": (int, float)}
#: ... and SQLite's ``typeof`` of them.
_TYPEOF = {"TEXT": "'text'", "INTEGER": "'integer'", "REAL": "'integer', 'real'"}
#: SQL: a row holding a value its column's type does not take (text in a number column, a blob).
MISTYPED_SQL = " OR ".join(f"typeof({column.name}) NOT IN ('null', {_TYPEOF[column.sqltype]})" for column in ROW)


class DamagedValue(ValueError):
    """A value of a results table its column's type does not take: the table was changed behind our back.

    ``workspace`` is the workspace whose table holds it, once known.
    """

    def __init__(self, message: str, row: int, workspace: Optional[str] = None):
        super().__init__(message)
        self.row, self.workspace = row, workspace


def mistyped_value(rows: Sequence[Sequence[Any]], columns: Sequence[str]) -> Optional[DamagedValue]:
    """The first value of ``rows`` (values of ``columns``, as SQLite gives them) that its column's
    type does not take, as a :class:`DamagedValue`; None when every value fits."""
    for index, row in enumerate(rows):
        for name, value in zip(columns, row, strict=True):
            if value is not None and (isinstance(value, bool) or not isinstance(value, _TAKES[COLUMN_TYPES[name]])):
                return DamagedValue(f"column {name!r} holds {repr(value)[:60]}, not a {COLUMN_TYPES[name]} value",
                                    index)
    return None


#: dependency roles in the order they lead back to the mask's own dense run.
_ROLES = ("previous", "model", "features", "mask", "rewind", "dense")


def dense_ancestor(key: str, deps: Mapping[str, Mapping[str, str]]) -> Optional[str]:
    """The key of the dense stage ``key`` descends from (itself if it is one), else None.

    ``deps`` maps every stage key to its ``{role: dependency key}``; ``previous`` is
    followed before the other roles.
    """
    seen = set()
    current: Optional[str] = key
    while current is not None and current not in seen:
        if current.startswith("dense-"):
            return current
        seen.add(current)
        roles = deps.get(current, {})
        current = next((roles[role] for role in _ROLES if role in roles), None)
    return None


def describe_arch(arch: Mapping[str, Any]) -> str:
    """``small_cnn(width=16)``: the architecture's name and its non-name settings."""
    params = ",".join(f"{name}={value}" for name, value in sorted(arch.items()) if name != "name")
    return f"{arch['name']}({params})" if params else str(arch["name"])


def build_row(cell: Mapping[str, Any], spec: Mapping[str, Any], metrics: Mapping[str, Any],
              dense_metrics: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The results row of a finished cell.

    ``cell``: the ledger's cell (sweep, mask_source, init, transfer, rewind,
    rewind_iteration, nominal_fraction, level, seed, stage_key); ``spec``: its sweep's
    settings; ``metrics``: the metrics of the cell's stage; ``dense_metrics``: those of
    the dense run its mask comes from (None when there is none or it is being recomputed:
    ``natural_sparsity`` is then empty). ``recorded_at`` is left to :func:`results.record`.
    """
    return {
        "sweep": cell["sweep"], "stage_key": cell["stage_key"], "dataset": spec["dataset"]["name"],
        "arch": describe_arch(spec["arch"]), "mask_source": cell["mask_source"], "init": cell["init"],
        "rewind": cell["rewind"], "rewind_iteration": cell["rewind_iteration"], "level": cell["level"],
        "nominal_fraction": cell["nominal_fraction"], "measured_fraction": metrics["fraction_remaining"],
        "seed": cell["seed"], "top1": metrics.get("top1", metrics.get("test_top1")),
        "epochs": metrics["epochs"], "wall_time_s": metrics["wall_time_s"],
        "natural_sparsity": (dense_metrics or {}).get("zero_fraction"),
        "eval_dataset": metrics.get("eval_dataset"), "transfer": cell["transfer"], **_metric(metrics),
    }


def _metric(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metric`` and ``map_11point`` of a row: a multi-label evaluation made before issue 28
    (``map``, no ``map_11point``) held the 11-point mAP in ``top1`` and is named for it."""
    metric, eleven_point = metrics.get("metric"), metrics.get("map_11point")
    if metric == "map" and "map_11point" not in metrics and metrics.get("eval_dataset") in ELEVEN_POINT_BEFORE:
        metric, eleven_point = "map_11point", metrics.get("top1")
    return {"metric": metric, "map_11point": eleven_point}


# --------------------------------------------------------------------------- a row given to record


def prepare_row(row: Mapping[str, Any], index: int) -> tuple:
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
    for name, sqltype in COLUMN_TYPES.items():
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
    kind = type(value)  # the plain types of a row built from JSON, decided first: thousands of rows a status
    if kind is str and sqltype == "TEXT" or kind is int and sqltype == "INTEGER":
        return value
    if kind is float and sqltype == "REAL":
        return value if math.isfinite(value) else None if math.isnan(value) else _INVALID
    if isinstance(value, float) and math.isnan(value):
        return None
    pandas = sys.modules.get("pandas")  # a pandas missing value can only come from a loaded pandas
    if pandas is not None and (value is pandas.NA or value is pandas.NaT):
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
            return int(float(value))
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
