"""Short labels for the workspaces of one table: the folder's name, led by its parents only where two collide.

A table of several workspaces (``results WS1 WS2``, ``results --db``) names each row's workspace;
the path as given, or ``HOST:/absolute/path`` from a central database, makes every column label of
a pivot and every legend entry of a plot 50 characters longer than what tells them apart.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import pandas as pd

#: a central database's name of a workspace: ``HOST:/PATH``, and ``#`` with the start of its id where a
#: path was made anew (:func:`results.central_db.load`).
_CENTRAL_NAME = re.compile(r"^(?P<host>[^:/]*):(?P<path>/.*?)(?:#(?P<id>[0-9a-fA-F]+))?$")


def short_labels(names: Sequence[str], resolve: bool = True) -> dict[str, str]:
    """Each of the distinct ``names`` (workspace paths, or a central database's ``HOST:/PATH`` names) ->
    its label: the folder's name, with as many parent folders as tell it apart from the others'
    (``a/runs/x`` and ``b/runs/x`` -> ``a/runs/x``, ``b/runs/x``; ``runs/y`` -> ``y``), else the name itself.

    ``resolve``: read a relative path from the current directory (so its parents are known).
    """
    candidates = {name: _candidates(name, resolve) for name in names}
    labels: dict[str, str] = {}
    pending, depth = list(dict.fromkeys(names)), 0
    while pending:
        at = {name: candidates[name][min(depth, len(candidates[name]) - 1)] for name in pending}
        counts: dict[str, int] = {}
        for label in at.values():
            counts[label] = counts.get(label, 0) + 1
        last = [name for name in pending if depth >= len(candidates[name]) - 1]
        for name in pending:
            if counts[at[name]] == 1 or name in last:
                labels[name] = at[name]
        pending, depth = [name for name in pending if name not in labels], depth + 1
    if len(set(labels.values())) < len(labels):  # a folder name that looks like a whole name: no shortening
        return {name: name for name in labels}
    return {name: labels[name] for name in dict.fromkeys(names)}


def check_labels(given: Sequence[str], workspaces: Sequence[str]) -> dict[str, str]:
    """``--label`` values, one per workspace in order, as workspace -> label; :class:`ValueError` unless
    there are as many as workspaces, each non-empty text on one line and no two alike."""
    if len(given) != len(workspaces):
        raise ValueError(f"give one label per workspace, in their order (workspaces: {len(workspaces)}, "
                         f"labels: {len(given)})")
    for label in given:
        if not label.strip() or not label.isprintable():
            raise ValueError(f"{label!r}: a label is printable text, not empty")
    repeated = sorted({label for label in given if list(given).count(label) > 1})
    if repeated:
        raise ValueError(f"{repeated[0]!r} is given twice; each workspace needs its own label")
    return dict(zip(workspaces, given, strict=True))


def relabel(frame: pd.DataFrame, labels: Optional[Mapping[str, str]] = None) -> pd.DataFrame:
    """``frame`` with its ``workspace`` column (if any) holding each name's label: ``labels``, or
    :func:`short_labels` of the names it holds."""
    if "workspace" not in frame.columns or frame.empty:
        return frame
    column = frame["workspace"]
    names = [str(name) for name in column.unique().tolist()]
    labels = {**short_labels(names), **(labels or {})}
    return frame.assign(workspace=column.map(lambda name: labels.get(str(name), name)).astype(column.dtype))


def _candidates(name: str, resolve: bool) -> list[str]:
    """The labels of ``name`` from the shortest: its folder's name, then with one parent more each time,
    and last the name itself."""
    central = _CENTRAL_NAME.match(name)
    if central:
        parts = PurePosixPath(central["path"]).parts[1:]
    else:
        path = Path(os.path.abspath(name)) if resolve else Path(name)  # abspath: a link stays the name given
        parts = tuple(part for part in path.parts if part != path.anchor)
    return ["/".join(parts[-depth:]) for depth in range(1, len(parts) + 1)] + [name]
