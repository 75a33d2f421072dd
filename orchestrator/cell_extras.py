"""The optional columns of a results row: natural sparsity, metric and evaluation dataset.

``natural_sparsity`` is the paper's measurement of a trained dense network: the fraction
of its prunable weights that are exactly zero (the dense stage's ``zero_fraction``). A
cell gets the value of the dense run its mask comes from, found by following the stage's
dependencies (``previous`` before the others); a cell with no dense run behind it (a
plain random mask, the full network re-initialised) gets none.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from workers.artifacts import DONE_FILE

from .workspace import stage_dir

#: dependency roles in the order they lead back to the mask's own dense run.
_ROLES = ("previous", "model", "features", "mask", "rewind", "dense")


def dense_ancestor(key: str, deps: Mapping[str, Mapping[str, str]]) -> Optional[str]:
    """The key of the dense stage ``key`` descends from (itself if it is one), else None."""
    seen = set()
    while key is not None and key not in seen:
        if key.startswith("dense-"):
            return key
        seen.add(key)
        roles = deps.get(key, {})
        key = next((roles[role] for role in _ROLES if role in roles), None)
    return None


def cell_extras(workspace: Path, deps: Mapping[str, Mapping[str, str]], key: str, metrics: Mapping) -> dict:
    """``natural_sparsity``, ``metric`` and ``eval_dataset`` of the cell whose stage is ``key``."""
    sparsity = None
    dense = dense_ancestor(key, deps)
    if dense is not None:
        try:
            sparsity = json.loads((stage_dir(Path(workspace), dense) / DONE_FILE).read_text())["metrics"].get("zero_fraction")
        except (OSError, ValueError, KeyError):
            sparsity = None  # the dense run is being recomputed: the column stays empty
    return {"natural_sparsity": sparsity, "metric": metrics.get("metric"), "eval_dataset": metrics.get("eval_dataset")}
