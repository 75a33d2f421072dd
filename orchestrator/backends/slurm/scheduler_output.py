"""What SLURM's commands print, read into plain values: pure functions, tested from recorded output.

The backend asks ``squeue -h -t all -r -o '%i|%T|%r|%N|%S'``, ``sacct -n -P -X -o
JobID,State,Reason,NodeList,Start`` and ``scontrol show config``; these read the answers: per job
a tuple (state, reason, node list, start time), the last two empty where SLURM has none.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Optional

#: SLURM states of a job that has not ended.
ALIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                   "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"})
#: ended SLURM states -> the failure taxonomy of ``prunesweep status``.
FAILURE_REASONS = {
    "TIMEOUT": "Timeout", "OUT_OF_MEMORY": "OutOfMemory", "NODE_FAIL": "NodeFailure", "CANCELLED": "Cancelled",
    "FAILED": "Failed", "BOOT_FAIL": "NodeFailure", "DEADLINE": "Timeout", "PREEMPTED": "Preempted",
}
#: squeue's output format the parser reads: job id, state, reason, nodes, start time.
SQUEUE_FORMAT = "%i|%T|%r|%N|%S"
#: sacct's fields the parser reads, in order.
SACCT_FIELDS = "JobID,State,Reason,NodeList,Start"
#: what SLURM writes for a time or node it does not know yet.
_UNKNOWN = {"N/A", "Unknown", "None", "None assigned", "(null)"}


def _fields(line: str) -> tuple[str, str, str, str, str]:
    job_id, state, reason, nodes, start = (part.strip() for part in (line.split("|") + [""] * 4)[:5])
    return (job_id, state, reason, "" if nodes in _UNKNOWN else nodes, "" if start in _UNKNOWN else start)


def parse_squeue(output: str, wanted: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """job id -> (state, reason, nodes, start) for the ``wanted`` job ids in ``squeue -o SQUEUE_FORMAT`` output."""
    wanted = set(wanted)
    states: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        job_id, *rest = _fields(line)
        if job_id in wanted:
            states[job_id] = tuple(rest)
    return states


def parse_sacct(output: str, wanted: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """job id -> (state, reason, nodes, start) for the ``wanted`` job ids in ``sacct -P -o SACCT_FIELDS`` output.

    sacct writes ``CANCELLED by 1000``: the state is its first word. The first line of a job wins.
    """
    wanted = set(wanted)
    states: dict[str, tuple[str, ...]] = {}
    for line in output.splitlines():
        job_id, state, reason, nodes, start = _fields(line)
        if job_id in wanted and job_id not in states:
            states[job_id] = (state.split()[0] if state else "UNKNOWN", reason, nodes, start)
    return states


def describe(job: tuple[str, ...]) -> tuple[str, str]:
    """(phase, detail) of a job that has not ended: ``queued`` with the scheduler's reason, or
    ``running`` with its node(s) and start time."""
    state, reason, nodes, start = (tuple(job) + ("", "", "", ""))[:4]
    if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING"):
        return "queued", reason or state.lower()
    since = f" since {start.replace('T', ' ')}" if start else ""
    return ("running" if state == "RUNNING" else state.lower()), (f"on {nodes}" if nodes else "") + since


def parse_max_array_size(config: str) -> Optional[int]:
    """``MaxArraySize`` from ``scontrol show config`` output, or None when it is not there."""
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M)
    return int(match.group(1)) if match else None


def array_ids(job_ids: Iterable[str]) -> list[str]:
    """The array job ids (``123`` of ``123_4``) of some job ids, sorted, each once."""
    return sorted({job_id.split("_")[0] for job_id in job_ids})


def failed_job_reason(log_texts: list[str]) -> tuple[str, str]:
    """(reason class, one line) for a job SLURM calls FAILED, from the tails of its submitit stderr logs.

    submitit ends a job FAILED both when the stage raised and when it stopped requeueing
    itself (the time-out or preemption limit was reached): the log tells them apart.
    """
    if not log_texts:
        return "Failed", ""
    text = "\n".join(log_texts)
    if "timed-out too many times" in text:
        return "Timeout", "time limit reached more often than slurm.max_requeues allows"
    if "timed-out and not checkpointable" in text:
        return "Timeout", "timed out"
    if "Traceback (most recent call last)" in text:
        return "PythonException", ""
    return "Failed", ""
