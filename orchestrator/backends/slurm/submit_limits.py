"""How many jobs one launch may still queue: the association limits ``MaxSubmitJobs`` and
``GrpSubmitJobs`` (``sacctmgr``) less the user's jobs already queued, checked before anything is
submitted. Every array task counts as one job for these limits, as it does for SLURM.

Where accounting does not answer (no slurmdbd, no ``sacctmgr``), nothing is checked: SLURM then
has no such limit to enforce. ``GrpSubmitJobs`` counts the jobs of every user of the account;
only the user's own are subtracted here, so a full group limit still shows as sbatch's error.
"""
from __future__ import annotations

import getpass
import subprocess
from typing import Optional

#: what ``sacctmgr`` is asked for, in order.
ASSOCIATION_FIELDS = "Account,MaxSubmit,GrpSubmit"


def parse_submit_limit(output: str, account: Optional[str] = None) -> Optional[int]:
    """The smallest ``MaxSubmit``/``GrpSubmit`` in ``sacctmgr -nP show assoc format=ASSOCIATION_FIELDS``
    output (of ``account``'s lines when given), or None when none is set."""
    limits = []
    for line in output.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or (account and fields[0] != account):
            continue
        limits += [int(value) for value in fields[1:3] if value.strip().isdigit()]
    return min(limits, default=None)


def submit_limit(account: Optional[str] = None, user: Optional[str] = None) -> Optional[int]:
    """The association's limit on queued jobs for ``user`` (default: this user), None where none answers."""
    user = user or getpass.getuser()
    try:
        result = subprocess.run(["sacctmgr", "-nP", "show", "assoc", f"where user={user}",
                                 f"format={ASSOCIATION_FIELDS}"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_submit_limit(result.stdout, account) if result.returncode == 0 else None


def queued_jobs(user: Optional[str] = None) -> int:
    """The user's jobs pending or running now (each array task one)."""
    result = subprocess.run(["squeue", "-h", "-r", "-u", user or getpass.getuser(), "-o", "%i"],
                            capture_output=True, text=True, timeout=60)
    return len(result.stdout.split())


def check(planned: int, account: Optional[str] = None) -> None:
    """Refuse (UserError, nothing submitted) a launch of ``planned`` jobs that the association's limit cannot take."""
    from orchestrator.errors import UserError

    limit = submit_limit(account)
    if limit is None:
        return
    room = limit - queued_jobs()
    if planned > room:
        raise UserError(f"backend slurm: this launch queues {planned} job(s) but the association's limit "
                        f"(MaxSubmitJobs/GrpSubmitJobs {limit}) leaves room for {max(room, 0)}; nothing was "
                        "submitted: wait until queued jobs end, or set slurm.stages_per_job to pack stages")
