"""Where the SLURM backend's jobs stand: ``squeue`` first, ``sacct`` where accounting answers, cached a few
seconds; what the ledger should say of a stage from its job's state; ``scancel``."""
from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

from orchestrator.backends.base import Verdict
from orchestrator.backends.slurm.inputs import read_blocked, stage_inputs
from orchestrator.backends.slurm.scheduler_output import (
    ALIVE,
    FAILURE_REASONS,
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    array_ids,
    failed_job_reason,
    parse_sacct,
    parse_squeue,
)
from workers.stages.workspace_files import atomic_write_bytes, read_json, read_tail

#: seconds a cached answer of the scheduler is reused by status queries.
STATE_CACHE_S = 5.0


def job_states(job_ids: list[str], cache: Optional[Path] = None) -> dict[str, tuple[str, ...]]:
    """job id -> (SLURM state, reason, nodes, start) from ``squeue``, then ``sacct`` where accounting answers.

    One ``squeue`` for all arrays at once. Without accounting ``sacct`` fails quietly;
    ``squeue -t all`` still knows every job the controller remembers (``MinJobAge``), so
    status stays right. With ``cache`` (a JSON file), an answer about the same jobs younger
    than :data:`STATE_CACHE_S` is reused instead of asking again.
    """
    if not job_ids:
        return {}
    if cache is not None:
        try:
            cached = read_json(cache)
            if time.time() - cached["time"] < STATE_CACHE_S and set(job_ids) <= set(cached["states"]):
                return {job_id: tuple(cached["states"][job_id]) for job_id in job_ids}
        except (OSError, ValueError, KeyError, TypeError):
            pass
    states = _ask_scheduler(job_ids)
    answered = {job_id: states.get(job_id) for job_id in job_ids}
    if cache is not None and all(answered.values()):  # a job the scheduler forgot is worth asking again
        atomic_write_bytes(cache, json.dumps({"time": time.time(), "states": answered}).encode())
    return states


def _ask_scheduler(job_ids: list[str]) -> dict[str, tuple[str, ...]]:
    try:
        output = subprocess.run(["squeue", "-h", "-t", "all", "-r", "-j", ",".join(array_ids(job_ids)),
                                 "-o", SQUEUE_FORMAT], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        output = ""
    states = parse_squeue(output, job_ids)
    missing = [job_id for job_id in job_ids if job_id not in states]
    if missing:
        try:
            result = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(array_ids(missing)), "-o", SACCT_FIELDS],
                                    capture_output=True, text=True, timeout=60)
            output = result.stdout if result.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            output = ""
        states.update(parse_sacct(output, missing))
    return states


def explain_failed_job(log_folder: Path, job_id: str) -> tuple[str, str]:
    """(reason class, one line) for a job SLURM calls FAILED, read from submitit's stderr logs (one per rank)."""
    texts = []
    for log in sorted((Path(log_folder) / job_id).glob(f"{job_id}_*_log.err")):
        try:
            texts.append(read_tail(log, limit=20000))
        except OSError:
            pass
    return failed_job_reason(texts)


def judge_job(job_id: str, job: Optional[tuple[str, ...]], log_folder: Path, log_tail: str,
              key: Optional[str] = None) -> Verdict:
    """What the ledger should say of a stage without artifacts whose job SLURM reports as ``job``
    ((state, reason), or None when neither squeue nor sacct knows it). With ``key``, a job that
    ended after recording its stage blocked (:mod:`.inputs`) makes the stage blocked."""
    missing = read_blocked(Path(log_folder).parent, key, job_id) if key else None
    if missing:
        return Verdict("blocked", "DependencyFailed", ", ".join(missing))
    if job is None:  # what SLURM does with an array task cancelled while still pending
        return Verdict("failed", "Cancelled", f"job {job_id} is unknown to squeue and sacct: cancelled before it "
                                              "started (or forgotten by the controller)")
    state, reason = job[0], job[1]
    if state in ALIVE:
        if "DependencyNeverSatisfied" in reason:
            return Verdict("blocked", message=f"job {job_id} (DependencyNeverSatisfied: a job it waits for failed)")
        return Verdict("running")
    error_class = FAILURE_REASONS.get(state, "CompletedWithoutArtifacts" if state == "COMPLETED" else state.title())
    detail = log_tail or f"job {job_id} ended {state}"
    if state == "FAILED":
        error_class, why = explain_failed_job(log_folder, job_id)
        detail = f"{why}\n{detail}" if why else detail
    return Verdict("failed", error_class, f"job {job_id} ended {state}\n{detail}")


def blocked_while_queued(workspace: Path, queued: list[str], ledger_states: Mapping[str, str],
                         verdicts: Mapping[str, Verdict]) -> dict[str, Verdict]:
    """Verdicts for queued stages that can never run: one of their inputs failed or is blocked.

    Their jobs wait with ``afterany`` and would only find out (and end blocked) once the whole
    array before them ended; status says so at once. Transitive: a queued stage waiting for one
    found blocked here is blocked too.
    """
    from orchestrator.state.workspace import stage_dir

    state = dict(ledger_states)
    state.update({key: verdict.state for key, verdict in verdicts.items() if verdict.state != "running"})
    blocked: dict[str, Verdict] = {}
    pending = list(queued)
    changed = True
    while changed:
        changed = False
        for key in list(pending):
            try:
                inputs = stage_inputs(stage_dir(workspace, key))
            except (OSError, ValueError):
                pending.remove(key)
                continue
            failed = [name for name in inputs if state.get(name) in ("failed", "blocked", "cancelled")]
            if failed:
                cancelled = all(state.get(name) == "cancelled" for name in failed)
                blocked[key] = Verdict("blocked", "DependencyCancelled" if cancelled else "DependencyFailed",
                                       ", ".join(failed))
                state[key] = "blocked"
                pending.remove(key)
                changed = True
    return blocked


def blocked_by_cancelled(verdicts: Mapping[str, Verdict], ledger_states: Mapping[str, str]) -> dict[str, Verdict]:
    """The blocked verdicts whose missing inputs were all cancelled (``prunesweep cancel --stage``), saying so."""
    return {key: Verdict("blocked", "DependencyCancelled", verdict.message) for key, verdict in verdicts.items()
            if verdict.error_class == "DependencyFailed"
            and all(ledger_states.get(name) == "cancelled" for name in verdict.message.split(", "))}


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the given jobs (and nothing else)."""
    if job_ids:
        subprocess.run(["scancel", *sorted(set(job_ids))], capture_output=True, timeout=60)


def cancel_stage_job(workspace: Path, key: str, job_id: Optional[str], sharing: list[str]) -> str:
    """``scancel`` the one job (array task, ``123_4``) of stage ``key``, queued or running; what was done.
    UserError when it has none yet, when ``sharing`` names other running stages of that job
    (``slurm.stages_per_job``: they would stop too), or with scancel's own words when it refuses."""
    from orchestrator.errors import UserError

    if not job_id:
        raise UserError(f"--stage {key}: no SLURM job is recorded for it (still being submitted?); try again in a "
                        "moment")
    if sharing:
        raise UserError(f"--stage {key}: its job {job_id} also runs {', '.join(sorted(sharing)[:5])} "
                        f"(slurm.stages_per_job); cancelling it would stop them too: `prunesweep cancel {workspace}` "
                        "stops every job")
    try:
        result = subprocess.run(["scancel", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"scancel {job_id}: {error}") from None
    if result.returncode != 0:
        words = " ".join((result.stderr or result.stdout).split())[:300]
        raise UserError(f"scancel {job_id} refused: {words or f'exit code {result.returncode}'}")
    return f"scancel {job_id}"
