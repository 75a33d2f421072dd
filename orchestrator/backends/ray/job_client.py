"""The Ray driver job of a workspace: its record in ``WORKSPACE/ray/driver.json`` and the
job submission calls that ask for its status or stop it (no Ray core connection needed).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from orchestrator.errors import UserError
from workers.stages.artifacts import atomic_write_json
from workers.stages.workspace_files import FileTooLarge, NotARegularFile, read_json

#: the driver job's record, relative to the workspace.
DRIVER_RECORD = Path("ray") / "driver.json"


def read_driver_record(workspace: Path) -> Optional[dict]:
    """The last driver job submitted for ``workspace`` (address, submission id, state), or None."""
    try:
        record = read_json(Path(workspace) / DRIVER_RECORD, Path(workspace))
    except (FileNotFoundError, NotARegularFile, FileTooLarge, ValueError):  # none of ours: written anew
        return None
    return record if isinstance(record, dict) else None


def write_driver_record(workspace: Path, **fields: Any) -> dict:
    """Update the driver record atomically; return it."""
    record = {**(read_driver_record(workspace) or {}), **fields}
    atomic_write_json(Path(workspace) / DRIVER_RECORD, record, Path(workspace))
    return record


def job_client(address: str):
    """A job submission client for ``address``; UserError (exit 2) when it cannot be reached."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as error:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        raise UserError(f"ray.address: cannot reach the Ray cluster at {address}: {one_line(error)}") from None


def driver_status(workspace: Path) -> Optional[tuple[dict, str]]:
    """(driver record, its Ray job status or why it is unknown), or None without a driver job."""
    record = read_driver_record(workspace)
    if not record or not record.get("submission_id"):
        return None
    try:
        status = str(job_client(record["address"]).get_job_status(record["submission_id"]))
    except Exception as error:  # noqa: BLE001 - a status line must never break `status`
        status = f"UNKNOWN ({one_line(error)})"
    return record, status


def stop_driver(workspace: Path, timeout: float = 60) -> Optional[str]:
    """Stop the workspace's driver job (its stage tasks die with it); return its id, or None."""
    record = read_driver_record(workspace)
    if not record or not record.get("submission_id"):
        return None
    client = job_client(record["address"])
    job = record["submission_id"]
    if client.get_job_status(job).is_terminal():
        return None
    client.stop_job(job)
    deadline = time.monotonic() + timeout
    while not client.get_job_status(job).is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5)
    status = client.get_job_status(job)
    if not status.is_terminal():
        raise UserError(f"the Ray driver job {job} did not stop within {timeout:g} s (status {status}); "
                        f"try `ray job stop --address {record['address']} {job}`")
    write_driver_record(workspace, state="stopped")
    return job


def one_line(error: BaseException) -> str:
    """The first line of an error's message (Ray puts the what there, advice after)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:300]
