"""The records of the campaign model's event loop (``bench/campaign_engine.py``): stages, jobs, arrays."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Optional

from campaign_cluster import Allocation
from campaign_model import StageSpec

#: job states: waiting for its dependencies, for its BeginTime (a requeue), for GPUs, running, ended.
HELD, DELAYED, PENDING, RUNNING, ENDED = "held", "delayed", "pending", "running", "ended"


class Stage:
    """A stage's state in one run: its progress, attempts, retries and the job that holds it."""

    __slots__ = ("spec", "gpus", "state", "progress", "attempts", "retries_used", "failure", "job", "began",
                 "overhead", "waiting_on", "released")

    def __init__(self, spec: StageSpec, gpus: int):
        self.spec, self.gpus = spec, gpus
        self.state = "waiting"  # waiting (for a job or in one), running, done, failed, blocked
        self.progress = 0.0  # seconds of work kept (checkpointed)
        self.attempts = self.retries_used = self.waiting_on = 0
        self.failure: Optional[str] = None
        self.job: Optional[int] = None
        self.began = self.overhead = 0.0
        self.released = False  # done and its job ended (per_stage: its dependents may start)


class Job:
    """One SLURM job (an array task): its array, its priority, its state and the GPUs it holds."""

    __slots__ = ("index", "key", "array", "priority", "state", "allocation", "started", "token", "after", "waiting",
                 "dependents")

    def __init__(self, index: int, key: str, array: int, priority: tuple):
        self.index, self.key, self.array, self.priority = index, key, array, priority
        self.state = HELD
        #: the jobs it waits for (afterany), how many of them have not ended, the jobs waiting for it.
        self.after: list[int] = []
        self.waiting = 0
        self.dependents: list[int] = []
        self.allocation: Optional[Allocation] = None
        self.started = 0.0
        self.token = 0  # bumped whenever what the job was doing stops: stale events are skipped


class Array:
    """One ``sbatch``: its jobs, the arrays it waits for and how many of its jobs ended, failed, run."""

    __slots__ = ("jobs", "after", "dependents", "ended", "failed", "dead", "released", "running", "parallelism",
                 "retries")

    def __init__(self, after: list[int], parallelism: int, retries: int):
        self.jobs: list[int] = []
        self.after, self.parallelism, self.retries = after, parallelism, retries
        self.dependents: list[int] = []
        self.ended = self.failed = self.running = 0
        self.dead = self.released = False

    def complete(self) -> bool:
        """Every job of the array ended (however it ended)."""
        return self.ended == len(self.jobs)


def queued_behind(doomed: Iterable[str], order: list[str], stages: Mapping[str, Stage], jobs: list[Job]) -> list[Job]:
    """The jobs still queued (waiting for their arrays or for GPUs) whose stage waits, directly or not,
    for one of ``doomed`` (failed or blocked): ``status`` shows them blocked and ``resume`` reruns them."""
    doomed = set(doomed)
    queued = []
    for key in order:  # dependency order: a stage behind one found here is found too
        stage = stages[key]
        job = jobs[stage.job] if stage.job is not None else None
        if job is not None and job.state in (HELD, PENDING) and any(d in doomed for d in stage.spec.deps):
            doomed.add(key)
            queued.append(job)
    return queued
