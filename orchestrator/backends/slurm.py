"""SLURM through submitit: the DAG submitted as job arrays chained with ``afterok``.

``run`` submits and returns: stages of one kind and one wave (their depth in the DAG)
form one array (chunked to the cluster's ``MaxArraySize``), and each array waits with
``--dependency=afterok:`` for the arrays holding its stages' dependencies, so no driver
process has to stay alive. Each stage runs as a submitit ``Checkpointable``: on the
signal before preemption or the time limit it is requeued with the same stage folder
and resumes from its epoch checkpoint (all mutable state lives in the stage folder).

Where a job stands comes from ``squeue``/``scontrol`` first and ``sacct`` only where
accounting answers (see :func:`job_states`).
"""
from __future__ import annotations

import importlib
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Optional

from .base import DEFAULT_RUNNER, Backend, Events, Task

#: SLURM states of a job that has not ended.
ALIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
         "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "PREEMPTED"}
#: ended SLURM states -> the failure taxonomy of ``prunesweep status``.
FAILURE_REASONS = {
    "TIMEOUT": "Timeout", "OUT_OF_MEMORY": "OutOfMemory", "NODE_FAIL": "NodeFailure", "CANCELLED": "Cancelled",
    "FAILED": "Failed", "BOOT_FAIL": "NodeFailure", "DEADLINE": "Timeout", "PREEMPTED": "Preempted",
}


class StageJob:
    """What a SLURM job runs: the worker entry point on one stage folder, requeued on preemption."""

    def __init__(self, runner: str = DEFAULT_RUNNER):
        self.runner = runner

    def __call__(self, folder: str) -> None:
        module_name, function_name = self.runner.split(":")
        getattr(importlib.import_module(module_name), function_name)(Path(folder))

    def checkpoint(self, folder: str):
        """Requeue the same stage: it resumes from the epoch checkpoint in its folder."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, folder)


def max_array_size(override: Optional[int] = None) -> int:
    """The cluster's ``MaxArraySize`` (largest task index + 1), unless overridden."""
    if override:
        return override
    try:
        output = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 1000
    match = re.search(r"^MaxArraySize\s*=\s*(\d+)", output, re.M)
    return int(match.group(1)) if match else 1000


def waves(tasks: list[Task]) -> dict[int, list[Task]]:
    """Tasks by depth: a task's wave is one more than the deepest task it waits for."""
    by_key = {task.key: task for task in tasks}
    depth: dict[str, int] = {}

    def depth_of(key: str) -> int:
        if key not in depth:
            needs = [k for k in by_key[key].waits_for if k in by_key]
            depth[key] = 1 + max((depth_of(k) for k in needs), default=-1)
        return depth[key]

    grouped: dict[int, list[Task]] = defaultdict(list)
    for task in tasks:
        grouped[depth_of(task.key)].append(task)
    return dict(sorted(grouped.items()))


class SlurmBackend(Backend):
    """Submits tasks as chained job arrays and returns without waiting."""

    name = "slurm"
    detached = True

    def __init__(self, settings: Mapping[str, Any], log_folder: Path, runner: str = DEFAULT_RUNNER):
        self.settings = dict(settings)
        self.log_folder = Path(log_folder)
        self.runner = runner

    def _executor(self, kind: str, dependency: Optional[str]):
        import submitit

        settings = self.settings
        executor = submitit.SlurmExecutor(folder=self.log_folder / "%j", max_num_timeout=settings.get("max_requeues", 3))
        parameters = {
            "job_name": f"prunesweep-{kind}",
            "time": settings.get("time_min", {}).get(kind, settings.get("default_time_min", 60)),
            "cpus_per_task": settings.get("cpus_per_task", 1),
            "array_parallelism": settings.get("array_parallelism", 256),
            "signal_delay_s": settings.get("signal_delay_s", 90),
            # one math thread per allocated CPU, as the local backend does: same numbers everywhere
            "setup": [f"export OMP_NUM_THREADS={settings.get('cpus_per_task', 1)} "
                      f"MKL_NUM_THREADS={settings.get('cpus_per_task', 1)}", *settings.get("setup", [])],
            "additional_parameters": {"open-mode": "append", **settings.get("extra_sbatch", {})},
        }
        for name in ("partition", "account", "qos", "constraint", "gpus_per_node"):
            if settings.get(name) is not None:
                parameters[name] = settings[name]
        if settings.get("mem_gb") is not None:
            parameters["mem"] = f"{settings['mem_gb']}GB"
        if dependency:
            parameters["dependency"] = dependency
        executor.update_parameters(**parameters)
        return executor

    def preflight(self) -> None:
        """Refuse (UserError, nothing submitted) unless SLURM answers and knows the partition."""
        from ..errors import UserError

        try:
            result = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise UserError("backend slurm: `sinfo` is not on PATH: is this a SLURM login node?") from None
        except subprocess.TimeoutExpired:
            raise UserError("backend slurm: `sinfo` did not answer within 60 s") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"backend slurm: SLURM is not reachable (sinfo: {last})")
        partition = self.settings.get("partition")
        known = sorted(set(result.stdout.split()))
        if partition and partition not in known:
            raise UserError(f"slurm.partition: unknown partition {partition!r}; sinfo knows: {', '.join(known)}")

    def run(self, tasks: list[Task], events: Events) -> None:
        """Submit every task as arrays per wave and kind, chained with afterok; return at once."""
        if not tasks:
            return
        self.preflight()
        limit = max_array_size(self.settings.get("max_array_size"))
        array_of: dict[str, str] = {}  # task key -> the array job id that runs it
        job = StageJob(self.runner)
        for wave in waves(tasks).values():
            by_kind: dict[str, list[Task]] = defaultdict(list)
            for task in wave:
                by_kind[task.kind].append(task)
            for kind, members in by_kind.items():
                for start in range(0, len(members), limit):
                    chunk = members[start:start + limit]
                    needed = sorted({array_of[k] for task in chunk for k in task.waits_for if k in array_of}
                                    | {job_id.split("_")[0] for task in chunk for job_id in task.after_jobs})
                    dependency = "afterok:" + ":".join(needed) if needed else None
                    executor = self._executor(kind, dependency)
                    with executor.batch():
                        jobs = [executor.submit(job, str(task.folder)) for task in chunk]
                    for task, submitted in zip(chunk, jobs):
                        array_of[task.key] = submitted.job_id.split("_")[0]
                        events.started(task.key, host=None, pid=None, job_id=submitted.job_id)


def job_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """job id -> (SLURM state, reason) from ``squeue``, then ``sacct`` where accounting answers.

    Without accounting ``sacct`` fails quietly; ``squeue -t all`` still knows every job
    the controller remembers (``MinJobAge``), so status stays right.
    """
    states: dict[str, tuple[str, str]] = {}
    if not job_ids:
        return states
    wanted = set(job_ids)
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    try:
        output = subprocess.run(["squeue", "-h", "-t", "all", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"],
                                capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        output = ""
    for line in output.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        if job_id in wanted:
            states[job_id] = (state, reason)
    missing = [job_id for job_id in job_ids if job_id not in states]
    if missing:
        try:
            result = subprocess.run(["sacct", "-n", "-P", "-X", "-j", ",".join(sorted({j.split('_')[0] for j in missing})),
                                     "-o", "JobID,State,Reason"], capture_output=True, text=True, timeout=60)
            output = result.stdout if result.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            output = ""
        for line in output.splitlines():
            job_id, state, reason = (line.split("|") + ["", ""])[:3]
            if job_id in wanted and job_id not in states:
                states[job_id] = (state.split()[0] if state else "UNKNOWN", reason)
    return states


def cancel(job_ids: list[str]) -> None:
    """``scancel`` the given jobs (and nothing else)."""
    if job_ids:
        subprocess.run(["scancel", *sorted(set(job_ids))], capture_output=True, timeout=60)
