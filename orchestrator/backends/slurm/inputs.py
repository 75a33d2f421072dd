"""The check a SLURM job makes before running its stage: are the stage's inputs there?

Arrays wait for the arrays before them with ``--dependency=afterany`` (they start once those
ended, however they ended), so a failed, cancelled or lost stage no longer stops the arrays
after it. Each job therefore checks, before anything heavy is imported (no torch), that every
dependency of its stage has its ``DONE.json``; when one has not, the job writes a *blocked
record* (``WORKSPACE/slurm/blocked/<key>.json``: its job id and the missing stages) and ends
within seconds without running the stage. Its own dependents then find its ``DONE.json``
missing in turn, so exactly the transitive dependents of a failure are blocked, and
``status`` reads the records to say which stage each one waits for.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from workers.stages.artifacts import DONE_FILE, STAGE_FILE, atomic_write_json
from workers.stages.workspace_files import read_json

#: the folder of blocked records, inside the backend's log folder (``WORKSPACE/slurm``).
BLOCKED_DIR = "blocked"


def job_id_from(environ: Mapping[str, str]) -> Optional[str]:
    """This job's id as submitit and the ledger write it (``ARRAY_TASK`` for an array task)."""
    if environ.get("SLURM_ARRAY_JOB_ID") and environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{environ['SLURM_ARRAY_JOB_ID']}_{environ['SLURM_ARRAY_TASK_ID']}"
    return environ.get("SLURM_JOB_ID")


def stage_inputs(folder: Path) -> list[str]:
    """The dependency stages (folder names, i.e. keys) of the stage in ``folder``, from its ``stage.json``."""
    stage = read_json(Path(folder) / STAGE_FILE)
    return sorted(set((stage.get("deps") or {}).values()))


def missing_inputs(folder: Path) -> list[str]:
    """The dependency stages of the stage in ``folder`` without a ``DONE.json``."""
    folder = Path(folder)
    return [name for name in stage_inputs(folder) if not (folder.parent / name / DONE_FILE).is_file()]


def blocked_record_path(workspace: Path, key: str) -> Path:
    """Where the blocked record of stage ``key`` lives."""
    return Path(workspace) / "slurm" / BLOCKED_DIR / f"{key}.json"


def inputs_ready(folder: str | Path, environ: Mapping[str, str] = os.environ) -> bool:
    """True when every input of the stage exists; otherwise record why it is blocked, say so, return False.

    The stage folder is ``WORKSPACE/stages/<key>``; the record names this job so an older
    record (an earlier launch) is never mistaken for the present job's.
    """
    folder = Path(folder)
    missing = missing_inputs(folder)
    if not missing:
        return True
    atomic_write_json(blocked_record_path(folder.parent.parent, folder.name),
                      {"job_id": job_id_from(environ), "missing": missing}, folder.parent.parent)
    print(f"prunesweep: stage {folder.name} is blocked: its input(s) {', '.join(missing)} did not finish; "
          "not running it", file=sys.stderr, flush=True)
    return False


def read_blocked(workspace: Path, key: str, job_id: str) -> Optional[list[str]]:
    """The missing inputs job ``job_id`` of stage ``key`` recorded, or None when it recorded none."""
    try:
        record = read_json(blocked_record_path(workspace, key), workspace)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("job_id") != job_id:
        return None
    missing = record.get("missing")
    return [str(name) for name in missing] if isinstance(missing, list) and missing else None
