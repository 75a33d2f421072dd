"""Bring the ledger and the results table in line with the artifacts on disk.

Artifacts are the truth: a stage whose checksummed artifacts exist is done whatever the
ledger says; a damaged one is invalidated and planned again; a stage the ledger calls
running whose process is gone is planned again. Only verified artifacts are ingested
into the results table, and each cell once.
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

import results
from workers.artifacts import DONE_FILE, LOG_FILE, invalidate

from .artifact_stamps import verify_stage
from .errors import UserError
from .ledger import Ledger
from .workspace import WorkspaceLock, stage_dir

LOG_TAIL_LINES = 12


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reconcile(workspace: Path, ledger: Ledger, lock_held_by_us: bool = False, rehash: bool = False) -> set[str]:
    """Correct every stage's state from disk; return the keys verified done.

    Artifacts whose stamps are unchanged since they last hashed right are trusted
    (:mod:`orchestrator.artifact_stamps`); ``rehash`` checksums every one of them again.
    """
    workspace = Path(workspace)
    host = socket.gethostname()
    local_driver_alive: Optional[bool] = None
    done = set()
    rows = ledger.stages()
    # a read-only look (status) may reuse a few seconds old answer; launch/resume ask afresh
    scheduler = _scheduler_states(rows, None if lock_held_by_us else workspace / "slurm" / "job_states.json")
    for row in rows:
        key, state = row["key"], row["state"]
        ok, reason = verify_stage(workspace, ledger, key, rehash)
        if ok:
            done.add(key)
            if state != "done":
                ledger.mark_done(key)
            continue
        if reason != "not run" and state != "running":
            invalidate(stage_dir(workspace, key))
            ledger.mark_planned(key, "CorruptArtifact", f"artifact damaged ({reason}); it will be rerun")
        elif state == "done":
            ledger.mark_planned(key, "MissingArtifact", "the ledger said done but its artifacts are gone; it will be rerun")
        elif state == "running" and row["backend"] == "slurm":
            _reconcile_slurm_job(workspace, ledger, row, scheduler.get(row["job_id"]))
        elif state == "running":
            # a Ray worker that died may be being retried: for ray stages only the driver tells
            gone = (row["backend"] != "ray" and row["host"] == host and row["pid"] is not None
                    and not _process_alive(row["pid"]))
            if row["backend"] in ("local", "ray") and not gone:
                if local_driver_alive is None:
                    local_driver_alive = not lock_held_by_us and WorkspaceLock(workspace).holder() is not None
                gone = not local_driver_alive
            if gone:
                where = f"pid {row['pid']} on {row['host']}"
                ledger.mark_planned(key, "Interrupted", (
                    f"its driver is gone (no prunesweep holds the workspace lock; it ran as {where}); it will be rerun"
                    if row["backend"] == "ray" else f"its process ({where}) is gone; it will be rerun"))
    return done


def _scheduler_states(rows, cache: Optional[Path]) -> dict:
    """SLURM states of the jobs the ledger believes queued or running."""
    job_ids = [row["job_id"] for row in rows if row["state"] == "running" and row["backend"] == "slurm" and row["job_id"]]
    if not job_ids:
        return {}
    from .backends.slurm import job_states

    return job_states(job_ids, cache)


def _reconcile_slurm_job(workspace: Path, ledger: Ledger, row, job: Optional[tuple[str, str]]) -> None:
    """A SLURM stage without artifacts: still queued/running, or ended (and why)."""
    from .backends.slurm import ALIVE, FAILURE_REASONS, explain_failed_job

    key, job_id = row["key"], row["job_id"]
    if job is None:  # what SLURM does with an array task cancelled while still pending
        ledger.mark_failed(key, "Cancelled", f"job {job_id} is unknown to squeue and sacct: cancelled before it "
                                             "started (or forgotten by the controller)")
        return
    state, reason = job
    if state in ALIVE:
        if "DependencyNeverSatisfied" in reason:
            ledger.mark_blocked(key, f"job {job_id} (DependencyNeverSatisfied: a job it waits for failed)")
        return
    error_class = FAILURE_REASONS.get(state, "CompletedWithoutArtifacts" if state == "COMPLETED" else state.title())
    detail = log_tail(workspace, key) or f"job {job_id} ended {state}"
    if state == "FAILED":
        error_class, why = explain_failed_job(workspace / "slurm", job_id)
        detail = f"{why}\n{detail}" if why else detail
    ledger.mark_failed(key, error_class, f"job {job_id} ended {state}\n{detail}")


def log_tail(workspace: Path, key: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a stage's log, or an empty string."""
    path = stage_dir(workspace, key) / LOG_FILE
    try:
        return "\n".join(path.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def ingest_results(workspace: Path, ledger: Ledger, done: Iterable[str]) -> int:
    """Record a results row for each cell whose stage is in ``done`` and not yet recorded.

    The row is built by :func:`results.build_row` from the cell, its sweep's settings, its
    stage's manifest metrics and those of the dense run behind it. A reader's copy of an
    older ledger (``ledger.writes_persist`` False) records nothing, since reading never writes.
    """
    workspace = Path(workspace)
    done = set(done)
    try:
        recorded = results.recorded_cells(workspace)
    except results.StoreVersionError as error:
        raise UserError(str(error)) from None
    if not ledger.writes_persist:
        return 0
    specs = {row["name"]: json.loads(row["spec"]) for row in ledger.sweeps()}
    manifests: dict[str, dict] = {}

    def metrics_of(key: str) -> dict:
        if key not in manifests:
            manifests[key] = json.loads((stage_dir(workspace, key) / DONE_FILE).read_text())["metrics"]
        return manifests[key]

    rows = []
    deps = ledger.deps()
    for cell in ledger.cells():
        key = cell["stage_key"]
        identity = (cell["sweep"], cell["mask_source"], cell["init"], cell["rewind"], cell["nominal_fraction"],
                    cell["seed"], key)
        if key not in done or identity in recorded:
            continue
        dense = results.dense_ancestor(key, deps)
        try:
            dense_metrics = metrics_of(dense) if dense is not None else None
        except (OSError, ValueError, KeyError):
            dense_metrics = None  # the dense run is being recomputed: natural_sparsity stays empty
        rows.append(results.build_row({name: cell[name] for name in cell.keys()}, specs[cell["sweep"]],
                                      metrics_of(key), dense_metrics))
    return results.record(workspace, rows) if rows else 0
