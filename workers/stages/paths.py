"""The names of every file a stage writes and reads, and of the workspace's own files and folders.

The one place these names are spelt (OpenLTH's ``paths.py``): the worker, the planner, the
orchestrator's state, ``repair`` and ``preflight`` import them from here. The ``results``
package imports nothing from ``workers``: its own stores' names (``results.table.DB_FILE``,
``results.central_db.STATE_FILE``) and the names :func:`results.export.export_problem` protects
are checked against these by ``tests/unit/test_stage_paths.py``. On-disk names never change: the
committed old workspaces (``tests/fixtures/``) are read with them.

Torch-free and import-free, so any room may import it.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

# ---- a workspace ---------------------------------------------------------------------------------
#: the folder of the stage folders (``stages/<key>/``).
STAGES_DIR = "stages"
#: the lock a writing command holds on the workspace.
WORKSPACE_LOCK_FILE = ".lock"
#: the store of stages, dependencies, sweeps and cells.
LEDGER_FILE = "ledger.sqlite"
#: the store of results rows (``results.table.DB_FILE``).
RESULTS_FILE = "results.sqlite"
#: the record of what was sent to the central database (``results.central_db.STATE_FILE``).
CENTRAL_STATE_FILE = "central_db.sqlite"
#: where ``repair`` moves what it cannot trust.
QUARANTINE_DIR = "quarantine"
#: where ``launch`` keeps a record of each sweep it registered (what ``repair`` plans again).
SWEEPS_DIR = "sweeps"
#: the records of ``prunesweep preflight``.
PREFLIGHT_DIR = "preflight"
#: the backends' folders.
SLURM_DIR = "slurm"
RAY_DIR = "ray"
#: the workspace's own folders: each must be a real folder (a link there is refused, never followed).
OWN_FOLDERS = (STAGES_DIR, QUARANTINE_DIR, SWEEPS_DIR, SLURM_DIR, RAY_DIR)


def stage_dir(workspace: Path, key: str) -> Path:
    """The folder of one stage."""
    return Path(workspace) / STAGES_DIR / key


# ---- a stage folder: the bookkeeping every kind shares ---------------------------------------------
#: what the planner wrote: kind, key, identity, config, deps.
STAGE_FILE = "stage.json"
#: the manifest that makes the stage done (files, their digests, the metrics).
DONE_FILE = "DONE.json"
METRICS_FILE = "metrics.json"
LOG_FILE = "log.txt"
#: the training checkpoint a preempted or failed stage resumes from.
CHECKPOINT_FILE = "checkpoint.pt"
#: the lock of the process running the stage.
STAGE_LOCK_FILE = "stage.lock"
#: the last failure of the stage.
ERROR_FILE = "error.json"
#: a user's request (``prunesweep cancel --stage``) to stop the running stage.
CANCEL_FILE = "cancel.json"
#: one line per epoch of a training stage.
EPOCHS_FILE = "epochs.jsonl"
#: what the driver writes when the sweep asks for tracking: the sweep, the cells, the trackers.
TRACKING_FILE = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
#: code version, packages, host and devices of the run.
PROVENANCE_FILE = "provenance.json"

# ---- a stage folder: the artifacts of the kinds ----------------------------------------------------
MASK_FILE = "mask.pt"
FINAL_FILE = "final.pt"
FEATURES_FILE = "features.pt"
#: ``finetune`` with ``mode: prune_during``: the dense phase's weights and checkpoint.
DENSE_PHASE_FILE = "finetune_dense.pt"
DENSE_PHASE_CHECKPOINT_FILE = "checkpoint_dense.pt"
#: ``preflight``: the rows of its checks.
PREFLIGHT_RESULT_FILE = "preflight.json"
#: ``preflight``: the weights after the training check's steps (compared with the resumed run's).
PREFLIGHT_WEIGHTS_FILE = "after.pt"


def rewind_file(iteration: int) -> str:
    """The file of the weights captured after ``iteration`` optimizer steps (W_k)."""
    return f"rewind_{int(iteration)}.pt"


def preflight_phase_files(phase: str) -> tuple[str, str, str]:
    """``preflight``: the order, log and report of one phase's process."""
    return f"{phase}-order.json", f"{phase}.log", f"{phase}.json"


# ---- what a kind must produce ----------------------------------------------------------------------
def _integers(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    return [value for value in values if type(value) is int]


def required_files(kind: Any, config: Any) -> set[str]:
    """The artifact names a stage of ``kind`` with ``config`` (its stage.json) must list in its
    ``DONE.json``, besides ``metrics.json`` (which every kind lists, extensions included).

    A manifest that lists fewer (a worker killed between writes of an older version, a hand-made
    or truncated manifest) makes the stage not done, so it is rerun instead of feeding a missing
    file to its dependents.
    """
    config = config if isinstance(config, Mapping) else {}
    if kind == "dense":
        return {FINAL_FILE, *(rewind_file(k) for k in _integers(config.get("capture_iterations", [])))}
    if kind == "rewind":
        iteration = config.get("rewind_iteration")
        return {rewind_file(iteration)} if type(iteration) is int else set()
    if kind in ("imp", "eval", "finetune"):
        return {MASK_FILE, FINAL_FILE}
    if kind == "random_mask":
        return {MASK_FILE}
    if kind == "features":
        return {FEATURES_FILE}
    return set()
