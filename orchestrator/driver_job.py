"""The driver a detached Ray launch submits as a Ray job:
``python -m orchestrator.driver_job WORKSPACE``.

It runs on the cluster: connects to Ray, checks that every node sees the workspace and that
the cluster can hold every stage kind's resources (ranks included), says so in
``WORKSPACE/ray/driver.json`` (``launch`` waits for that, still holding the workspace
lock), then takes the lock once ``launch`` lets go of it and runs
``prunesweep resume WORKSPACE --backend ray`` attached to the cluster. Exit codes are the
command's: 0 all done, 1 some failed or blocked, 2 bad setup (the workspace is not seen,
or a stage kind cannot be placed).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from orchestrator.backends.ray.backend import RayBackend, probe_workspace
from orchestrator.backends.ray.job_client import read_driver_record, write_driver_record
from orchestrator.backends.ray.ranks import check_cluster_fits
from orchestrator.errors import UserError, WorkspaceBusy

#: how long to wait for the launch that submitted this job to release the workspace lock.
LOCK_WAIT_S = 600


def main(argv: list[str]) -> int:
    """Check the workspace from every node, then resume the workspace's sweeps on this cluster."""
    from orchestrator import driver
    from orchestrator.state.ledger import Ledger
    from orchestrator.state.workspace import require_workspace

    workspace = Path(argv[0]).absolute()
    job = (read_driver_record(workspace) or {}).get("submission_id")
    try:
        require_workspace(workspace)
        ledger = Ledger(workspace)
        try:
            sweeps = ledger.sweeps()
        finally:
            ledger.close()
        settings = dict(json.loads(sweeps[-1]["spec"]).get("ray") or {}, attached=True, submission_id=job)
        RayBackend(settings, workspace).connect()
        probe_workspace(workspace)
        check_cluster_fits(settings)
    except UserError as error:
        if workspace.is_dir():
            write_driver_record(workspace, state="failed", message=str(error))
        print(f"prunesweep: error: {error}", file=sys.stderr)
        return error.exit_code
    write_driver_record(workspace, state="attached", host=socket.gethostname(), pid=os.getpid())
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            _, summary = driver.resume(workspace, "ray", progress=False, backend_settings=settings)
            if summary is not None:  # always, without dry_run
                break
        except WorkspaceBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    write_driver_record(workspace, state="finished", exit_code=summary.exit_code)
    print(f"ran {summary.ran} stage(s): {summary.done} done, {summary.failed} failed, {summary.blocked} blocked")
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
