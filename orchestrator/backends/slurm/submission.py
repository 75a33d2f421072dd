"""The SLURM backend's submission policy as data: which arrays one launch submits and what each waits for.

:meth:`SlurmBackend.run <orchestrator.backends.slurm.backend.SlurmBackend.run>` submits exactly
the arrays :func:`plan_arrays` returns, in that order, and the campaign simulator
(``bench/campaign_model.py``) runs the same plan, so a change of policy here changes both:

- the tasks of one launch (or resume) are grouped by *wave* (their depth among the tasks of
  that launch, :func:`waves`) and kind, in the order the tasks come (the planner's
  dependency order); the stages of a kind listed in ``stages_per_job`` are packed that many
  to a job; the jobs of a group form one array, chunked to ``MaxArraySize``;
- each array is submitted waiting with :data:`DEPENDENCY` (``afterany``: ended, however they
  ended) for every array of the launch that holds a dependency of one of its stages, and for
  the arrays of dependencies queued or running from an earlier launch; right after, each of its
  jobs is narrowed to the array *tasks* its own stages wait for (``afterany:123_4:125_0``,
  :attr:`ArraySubmission.waits`, set by :mod:`.task_updates`), so a stage starts as soon as its own
  inputs ended, not when the whole wave before did;
- critical path first: each job gets a ``nice`` (:attr:`ArraySubmission.nice`) from its stages'
  :attr:`StageToRun.priority <orchestrator.backends.base.StageToRun.priority>` (the driver's longest remaining
  chain): the larger the priority, the smaller the nice, in steps larger than the number of
  arrays of the launch, so that among jobs ready to start the longest remaining chain goes first
  whatever array it is in; the jobs of an array are in priority order too;
- each job checks its stage's inputs first and ends at once, *blocked*, when one is missing
  (:mod:`.inputs`); a stage process killed by a signal is started again inside its job up to
  :attr:`ArraySubmission.retries` times (:mod:`.pack`); a distributed stage (``ranks``) runs in
  the job's own processes and is not retried inside its job.

SLURM orders pending jobs by priority, then submission: ``priority/basic`` gives each job the
priority of the job before it minus one, minus its nice (``priority/multifactor`` subtracts the
nice too); the tasks of one array by index.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.backends.base import StageToRun
from orchestrator.backends.failure_classes import DEFAULT_RETRIES

#: how an array waits for the arrays before it: started once they ended, however they ended.
DEPENDENCY = "afterany"
#: the SLURM default of ``MaxArraySize`` (used when ``scontrol show config`` does not answer).
DEFAULT_MAX_ARRAY_SIZE = 1000
#: the default ``%N`` throttle of each array (``array_parallelism``).
DEFAULT_ARRAY_PARALLELISM = 256
#: the largest nice SLURM accepts.
MAX_NICE = 2147483645


@dataclass(frozen=True)
class ArraySubmission:
    """One ``sbatch`` of the plan: an array of jobs of one kind, each running one pack of tasks."""

    kind: str
    #: the tasks of each array job, in array index order (one task each unless ``stages_per_job``).
    packs: tuple[tuple[StageToRun, ...], ...]
    #: positions, in the plan, of the earlier arrays this one waits for.
    after: tuple[int, ...]
    #: array job ids outside the plan (dependencies queued or running from an earlier launch).
    after_jobs: tuple[str, ...]
    #: runs in the job's own processes (``ranks``): no restart inside the job.
    distributed: bool
    #: restarts inside a job of a stage process killed by a signal.
    retries: int
    #: the array's ``%N`` throttle: at most this many of its jobs run at once.
    parallelism: int
    #: per job: the (plan position, job index) of the jobs of earlier arrays of the plan it waits for.
    waits: tuple[tuple[tuple[int, int], ...], ...] = ()
    #: per job: the job ids (``123_4``) outside the plan it waits for.
    waits_outside: tuple[tuple[str, ...], ...] = ()
    #: per job: its ``nice`` (critical path first: 0 for the longest remaining chain of the launch).
    nice: tuple[int, ...] = ()

    def dependency(self, array_ids: Mapping[int, str]) -> str | None:
        """The ``--dependency`` of the ``sbatch``, given the job ids of the plan's arrays submitted so far.

        Every job waits for the whole arrays first; :meth:`job_dependency` then narrows each.
        """
        needed = sorted({array_ids[index] for index in self.after} | set(self.after_jobs))
        return f"{DEPENDENCY}:" + ":".join(needed) if needed else None

    def job_dependency(self, job: int, job_ids: Mapping[tuple[int, int], str]) -> str | None:
        """Job ``job``'s own dependency (``afterany:12_0:13_4``), given the job id of each
        (plan position, job index) submitted so far: the jobs its stages wait for."""
        needed = [job_ids[needs] for needs in self.waits[job]] + list(self.waits_outside[job])
        return f"{DEPENDENCY}:" + ":".join(needed) if needed else None


def waves(tasks: list[StageToRun]) -> dict[int, list[StageToRun]]:
    """Tasks by depth: a task's wave is one more than the deepest task it waits for."""
    by_key = {task.key: task for task in tasks}
    depth: dict[str, int] = {}

    def depth_of(key: str) -> int:
        if key not in depth:
            needs = [k for k in by_key[key].waits_for if k in by_key]
            depth[key] = 1 + max((depth_of(k) for k in needs), default=-1)
        return depth[key]

    grouped: dict[int, list[StageToRun]] = defaultdict(list)
    for task in tasks:
        grouped[depth_of(task.key)].append(task)
    return dict(sorted(grouped.items()))


def is_distributed(settings: Mapping[str, Any], kind: str) -> bool:
    """Whether the stages of ``kind`` run in their job's own processes (listed in ``ranks``)."""
    return kind in (settings.get("ranks") or {})


def in_job_retries(settings: Mapping[str, Any], kind: str) -> int:
    """Restarts, inside its job, of a stage of ``kind`` whose process was killed by a signal."""
    return 0 if is_distributed(settings, kind) else int(settings.get("retries", DEFAULT_RETRIES))


def plan_arrays(tasks: list[StageToRun], settings: Mapping[str, Any], max_array_size: int) -> list[ArraySubmission]:
    """The arrays one launch of ``tasks`` submits, in submission order (see the module's docstring)."""
    plan: list[ArraySubmission] = []
    job_of: dict[str, tuple[int, int]] = {}  # task key -> (position of its array in the plan, its job there)
    per_job = settings.get("stages_per_job") or {}
    parallelism = int(settings.get("array_parallelism", DEFAULT_ARRAY_PARALLELISM))
    for wave in waves(tasks).values():
        by_kind: dict[str, list[StageToRun]] = defaultdict(list)
        for task in sorted(wave, key=lambda task: -task.priority):  # stable: the planner's order among equals
            by_kind[task.kind].append(task)
        for kind, members in by_kind.items():
            size = int(per_job.get(kind, 1))
            packs = [tuple(members[i:i + size]) for i in range(0, len(members), size)]
            for start in range(0, len(packs), max_array_size):
                chunk = tuple(packs[start:start + max_array_size])
                waits = tuple(tuple(sorted({job_of[k] for task in pack for k in task.waits_for if k in job_of}))
                              for pack in chunk)
                outside = tuple(tuple(sorted({job_id for task in pack for job_id in task.after_jobs}))
                                for pack in chunk)
                after = sorted({index for needs in waits for index, _ in needs})
                arrays_outside = sorted({job_id.split("_")[0] for needs in outside for job_id in needs})
                plan.append(ArraySubmission(kind, chunk, tuple(after), tuple(arrays_outside),
                                            is_distributed(settings, kind), in_job_retries(settings, kind),
                                            parallelism, waits, outside))
                for job, pack in enumerate(chunk):
                    for task in pack:
                        job_of[task.key] = (len(plan) - 1, job)
    return _with_nice(plan)


def _with_nice(plan: list[ArraySubmission]) -> list[ArraySubmission]:
    """Each job's nice: the rank of its highest stage priority among the launch's, times the arrays in the plan
    (SLURM lowers each later submission's priority by one: a larger step keeps the ranks apart)."""
    best = [[max(task.priority for task in pack) for pack in array.packs] for array in plan]
    ranks = {value: rank for rank, value in enumerate(sorted({v for jobs in best for v in jobs}, reverse=True))}
    return [replace(array, nice=tuple(min(MAX_NICE, ranks[value] * len(plan)) for value in jobs))
            for array, jobs in zip(plan, best, strict=True)]
