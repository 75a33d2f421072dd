"""The ``tracking.json`` of the stages about to run: what the sweep's ``tracking:`` asks their worker
to send besides ``epochs.jsonl`` (:mod:`workers.stages.trackers`), with the sweep and the cells
each stage serves (the MLflow run's tags).

The file lies in the stage folder beside ``stage.json``, which it leaves alone: tracking is no
part of a stage's identity, its key or its ``stage.json``. Written (or removed, when the sweep
asks for no tracking) by ``launch`` and ``resume`` for exactly the stages they hand to the
backend, before the backend sees them; a done stage's folder is never touched.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

from orchestrator.state.ledger import Ledger
from workers.stages.artifacts import atomic_write_new_files, json_file_bytes
from workers.stages.paths import STAGES_DIR, TRACKING_FILE, stage_dir


def tracking_of(spec: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The ``tracking`` section of a sweep's settings (``SweepSpec.model_dump()``), None when it asks for none."""
    section = spec.get("tracking") or {}
    wanted = {name: value for name, value in section.items() if name in ("tensorboard", "mlflow") and value}
    return wanted or None


def cell_label(cell: Any) -> str:
    """A cell (a ledger row or a mapping) as its MLflow tag reads: ``labels / winning_ticket / rewind 0 / 51.2% /
    seed 0``."""
    parts = [cell["mask_source"], cell["init"]]
    if cell["transfer"]:
        parts.append(cell["transfer"])
    parts += [f"rewind {cell['rewind']}", f"{100 * float(cell['nominal_fraction']):.3g}%", f"seed {cell['seed']}"]
    return " / ".join(map(str, parts))


def write_tracking_files(workspace: Path, ledger: Ledger, keys: Iterable[str], sweep: Optional[str],
                         tracking: Optional[Mapping[str, Any]]) -> None:
    """Give each stage of ``keys`` the ``tracking.json`` of ``tracking`` (launched as ``sweep``), or take
    away the one an earlier launch gave it when ``tracking`` is None."""
    keys = list(keys)
    if tracking is None:  # one unlink per stage (0.5 s for 50,000): a stale file would send metrics on
        for key in keys:
            try:
                os.unlink(os.path.join(workspace, STAGES_DIR, key, TRACKING_FILE))
            except FileNotFoundError:
                pass
        return
    cells: dict[str, list[str]] = {}
    for row in ledger.cells_of(keys):
        cells.setdefault(row["stage_key"], []).append(cell_label(row))
    atomic_write_new_files(
        (stage_dir(workspace, key) / TRACKING_FILE,
         json_file_bytes({"sweep": sweep, "cells": list(dict.fromkeys(cells.get(key, []))), **tracking},
                         indent=None))
        for key in keys)
