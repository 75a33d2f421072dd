"""Each job of a just-submitted array narrowed to its own dependencies and given its nice (``scontrol update``).

``sbatch`` gives every task of an array the same ``--dependency``: the whole arrays that hold
a dependency of any of its stages. SLURM keeps a pending array as one record until a task is
changed, and ``scontrol update JobId=123_[0,4] Dependency=afterany:120_3 Nice=40`` changes
those tasks alone (splitting them off). :func:`updates` groups the jobs of one array by
(dependency, nice), so one launch makes one ``scontrol`` call per distinct pair, not one per
stage; the sbatch's dependency is a superset of every job's own, so a job never starts
before its inputs ended, even where an update comes late or fails (it then waits for the
whole arrays, as before).
"""
from __future__ import annotations

import subprocess
from collections import defaultdict
from collections.abc import Mapping

from orchestrator.backends.slurm.submission import ArraySubmission


def job_list(job_ids: list[str]) -> str:
    """``123_[0-2,5]`` for tasks of one array (``123`` for a job that is not an array task)."""
    if len(job_ids) == 1 and "_" not in job_ids[0]:
        return job_ids[0]
    array = job_ids[0].split("_")[0]
    indexes = sorted(int(job_id.split("_")[1]) for job_id in job_ids)
    ranges: list[list[int]] = []
    for index in indexes:
        if ranges and index == ranges[-1][1] + 1:
            ranges[-1][1] = index
        else:
            ranges.append([index, index])
    return f"{array}_[" + ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges) + "]"


def updates(array: ArraySubmission, position: int, job_ids: Mapping[tuple[int, int], str]) -> list[list[str]]:
    """The ``scontrol update`` arguments that give each job of the plan's array at ``position``
    (whose ids are in ``job_ids`` with those of the arrays before it) its own dependency and nice;
    none for a job that keeps the sbatch's dependency and nice 0."""
    array_ids = {index: job_id.split("_")[0] for (index, _), job_id in job_ids.items()}
    whole = array.dependency(array_ids)
    groups: dict[tuple[str | None, int], list[str]] = defaultdict(list)
    for job in range(len(array.packs)):
        own = array.job_dependency(job, job_ids)
        if own != whole or array.nice[job]:
            groups[(own, array.nice[job])].append(job_ids[(position, job)])
    return [[f"JobId={job_list(ids)}", f"Dependency={own or ''}", f"Nice={nice}"]
            for (own, nice), ids in groups.items()]


def apply(arguments: list[list[str]], timeout_s: float = 60.0) -> list[str]:
    """Run each ``scontrol update``; return one line per update SLURM refused (its job then
    waits for the whole arrays of the sbatch: later, never too early)."""
    refused = []
    for update in arguments:
        try:
            result = subprocess.run(["scontrol", "update", *update], capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as error:
            refused.append(f"{update[0]}: {error}")
            continue
        if result.returncode != 0:
            refused.append(f"{update[0]}: {(result.stderr.strip() or 'no message').splitlines()[-1]}")
    return refused
