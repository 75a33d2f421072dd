"""The one small interface every backend implements.

A backend receives tasks (a stage folder plus the keys of the tasks it waits for) and a
sink for events; it runs or submits them in dependency order and reports what happens.
It knows nothing of pruning: it calls the worker entry point, named as ``module:function``,
on a stage folder.
"""
from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

from workers.stages.lock import holder

#: the worker entry point every backend calls on a stage folder.
DEFAULT_RUNNER = "workers.entry:run_stage"


@dataclass(frozen=True)
class StageToRun:
    """One stage to run: its folder and the keys of the tasks that must finish first."""

    key: str
    folder: Path
    waits_for: tuple[str, ...] = ()
    #: larger runs first among ready tasks (the driver puts the critical path first).
    priority: float = 0.0
    #: the stage kind, for grouping and per-kind resources (never interpreted otherwise).
    kind: str = ""
    #: scheduler job ids of dependencies already queued or running outside this batch.
    after_jobs: tuple[str, ...] = ()


class Events(Protocol):
    """What a backend reports back while it runs."""

    def started(self, key: str, host: Optional[str], pid: Optional[int], job_id: Optional[str] = None) -> None:
        """A task began."""

    def finished(self, key: str) -> bool:
        """A task's process ended well; returns whether its artifacts really are done."""

    def failed(self, key: str, error_class: str, message: str) -> None:
        """A task raised, or its process died."""

    def blocked(self, key: str, because_of: str) -> None:
        """A task will not run because a task it waits for failed."""

    def retrying(self, key: str, error_class: str, message: str) -> None:
        """A task's attempt failed for a reason another attempt may survive (an infrastructure
        failure, :mod:`orchestrator.backends.failure_classes`); the backend starts it again."""

    def interrupted(self, key: str) -> None:
        """A running task was stopped by the user (Ctrl-C)."""

    def cancelled(self, key: str, reason: str) -> None:
        """A running task was stopped on the user's request (``prunesweep cancel --stage``,
        :mod:`orchestrator.backends.cancel_request`): not a failure, not retried; the backend then
        reports the tasks that wait for it :meth:`blocked`."""


@dataclass(frozen=True)
class Verdict:
    """What a backend says of a stage the ledger calls running that has no artifacts yet.

    ``state`` is what the ledger should say now: ``running`` (leave it), ``blocked``,
    ``failed`` or ``planned`` (it will be rerun); ``error_class`` and ``message`` say why.
    """

    state: str
    error_class: str = ""
    message: str = ""


STILL_RUNNING = Verdict("running")


@dataclass(frozen=True)
class Retry:
    """One failed attempt of a stage that its backend started again by itself, inside one job."""

    job_id: str
    #: ``infrastructure`` or ``deterministic`` (:mod:`orchestrator.backends.failure_classes`).
    failure_class: str
    #: how the attempt ended: ``killed by SIGKILL``.
    why: str
    host: str = ""
    at: str = ""


class Checks(Protocol):
    """What reconcile lends a backend judging its running stages."""

    workspace: Path
    #: True when the caller holds the workspace lock (launch/resume): ask the scheduler afresh.
    fresh: bool

    def driver_alive(self) -> bool:
        """Whether a prunesweep process other than the caller holds the workspace lock."""

    def log_tail(self, key: str) -> str:
        """The last lines of a stage's log, or an empty string."""

    def stage_states(self) -> Mapping[str, str]:
        """Stage key -> the ledger's state of every stage of the workspace."""


class Backend(ABC):
    """Runs tasks somewhere, and answers for the stages it ran.

    A backend is one subpackage of :mod:`orchestrator.backends` registered with one line in
    its ``BACKENDS``: ``backend.py`` defines ``BACKEND`` (a subclass of this) and
    ``settings.py`` defines ``SETTINGS`` (the pydantic model of the sweep file's section
    named like the backend). The class methods below answer for stages from their ledger
    rows (``key``, ``state``, ``backend``, ``job_id``, ``host``, ``pid``...) without an
    instance: ``status``, ``cancel`` and reconcile call them with no sweep at hand.
    """

    name: str = "backend"
    #: True when ``run`` returns after submitting (the stages then run without a driver).
    detached: bool = False

    @classmethod
    def create(cls, settings: Mapping[str, Any], workspace: Optional[Path], runner: str = DEFAULT_RUNNER,
               workers: Optional[int] = None) -> Backend:
        """The backend for one run: ``settings`` is the sweep's section for it (a dict), ``workers``
        the ``--workers`` of the command line (None: the settings decide)."""
        return cls(settings, workspace, runner=runner)  # type: ignore[call-arg]

    @abstractmethod
    def run(self, tasks: list[StageToRun], events: Events) -> None:
        """Run (or submit) ``tasks``, reporting through ``events``."""

    @classmethod
    def judge_running(cls, rows: list[Mapping[str, Any]], checks: Checks) -> dict[str, Verdict]:
        """Stage key -> verdict for this backend's stages the ledger calls running, whose artifacts
        are not there (a key left out stays running). Default: a stage runs while its driver does."""
        if not rows or checks.driver_alive():
            return {}
        return {row["key"]: Verdict("planned", "Interrupted", (
            f"its driver is gone (no prunesweep holds the workspace lock; it ran as pid {row['pid']} on "
            f"{row['host']}); it will be rerun")) for row in rows}

    @classmethod
    def planned_settings(cls, spec: Any, plan: Any, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings ``launch`` runs ``plan`` with: the sweep's section, plus what the backend derives
        from the plan (SLURM: time limits from the throughput table). Default: the section as it is."""
        return dict(settings)

    @classmethod
    def blocking_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The settings under which ``run`` runs its tasks from this process and returns when they end,
        where the backend can (``prunesweep preflight`` waits for its one task so). Default: as they are."""
        return dict(settings)

    @classmethod
    def plan_lines(cls, spec: Any, plan: Any, settings: Mapping[str, Any]) -> list[str]:
        """Lines ``prunesweep plan`` prints about running ``plan`` on this backend."""
        return []

    @classmethod
    def describe_running(cls, workspace: Path, rows: list[Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
        """Stage key -> (phase, detail) for this backend's stages the ledger calls running: ``queued``
        (waiting in a scheduler's queue; detail: the scheduler's reason) or ``running`` (detail: where,
        since when). A key left out runs where its ledger row says (host, pid, start)."""
        return {}

    @classmethod
    def cancel_jobs(cls, rows: list[Mapping[str, Any]]) -> None:
        """Withdraw the scheduler jobs of these stages (blocked ones about to be submitted again)."""
        return None

    @classmethod
    def cancel(cls, workspace: Path, running: Callable[[], list[Any]]) -> tuple[list[str], dict[str, str]]:
        """Stop whatever of this backend still runs for the workspace.

        ``running()`` reads the ledger's rows of this backend's running stages at the time it is
        called (a driver being stopped may start stages until it is gone). Returns the job ids
        stopped and, per stage key stopped, a message for the ledger (the stage becomes planned again).
        """
        return [], {}

    @classmethod
    def cancel_stage(cls, workspace: Path, row: Any, running: Callable[[], list[Any]]) -> str:
        """Stop the one running stage of ``row`` (its ledger row; the caller wrote its cancel request,
        :mod:`orchestrator.backends.cancel_request`) and nothing else; ``running()`` reads the rows of this
        backend's running stages. Returns what was done, one line; UserError when it cannot be stopped
        without stopping others. Default: the driver running it acts on the request."""
        return "requested; its driver stops it"

    @classmethod
    def log_files(cls, workspace: Path, row: Mapping[str, Any]) -> list[Path]:
        """The scheduler's log files of a stage, where they exist (besides its own ``log.txt``)."""
        return []

    @classmethod
    def job_retries(cls, workspace: Path, rows: list[Mapping[str, Any]]) -> dict[str, list[Retry]]:
        """Stage key -> the failed attempts its job (the row's ``job_id``, all of them that one) retried by
        itself, for these rows of stages the ledger called running: reconcile keeps them in the ledger,
        each record replacing what it said before. Default: none (a backend whose retries go through the
        driver's ``Events.retrying`` has nothing to add)."""
        return {}

    @classmethod
    def status_lines(cls, workspace: Path) -> list[str]:
        """Lines ``prunesweep status`` prints about this backend's drivers for the workspace."""
        return []


class DependencyQueue:
    """The tasks of one run in dependency order: ready ones by priority, failures blocking their dependents.

    For backends that schedule stages themselves (local, Ray): :meth:`pop` the next ready
    task, then report it :meth:`done` (its dependents may become ready), :meth:`retry` it or
    report it :meth:`failed` (returns the dependents, transitively, that can no longer run).
    Stages held by a process not of this run are waited for: :attr:`held`, :meth:`release_free`.
    """

    def __init__(self, tasks: Iterable[StageToRun]):
        tasks = list(tasks)
        # a stage these tasks wait for that a process not of this run still runs (it holds the stage's lock,
        # workers.stages.lock: an orphan of a dead driver, say) is waited for, then run (it returns at once if
        # it ended done), never beside that process
        known = {task.key for task in tasks}
        held: dict[str, StageToRun] = {}
        for task in tasks:
            for need in task.waits_for:
                folder = task.folder.parent / need
                if need not in known and need not in held and holder(folder) is not None:
                    held[need] = StageToRun(need, folder, priority=task.priority)
        tasks += held.values()
        self.tasks = {task.key: task for task in tasks}
        self._waiting = {key: {k for k in task.waits_for if k in self.tasks} for key, task in self.tasks.items()}
        self._dependents: dict[str, list[str]] = {key: [] for key in self.tasks}
        for key, needs in self._waiting.items():
            for need in needs:
                self._dependents[need].append(key)
        self._ready = [(-self.tasks[key].priority, key) for key, needs in self._waiting.items() if not needs]
        heapq.heapify(self._ready)
        #: keys neither finished, failed nor blocked yet.
        self.unresolved = set(self.tasks)
        #: keys not ready until no process holds their lock (see :meth:`wait_for_holder`).
        self.held: set[str] = set()
        for key in held:
            self.wait_for_holder(key)

    def wait_for_holder(self, key: str) -> None:
        """``key`` runs in a process not ours (it holds the stage's lock): it becomes ready only once
        that lock is free (:meth:`release_free`)."""
        self.held.add(key)
        self.unresolved.discard(key)

    def release_free(self) -> None:
        """Make ready the held tasks whose lock no process holds any more."""
        for key in sorted(self.held):
            if holder(self.tasks[key].folder) is None:
                self.held.discard(key)
                self.unresolved.add(key)
                self.retry(key)

    def has_ready(self) -> bool:
        """Whether a task can start now."""
        return any(key in self.unresolved for _, key in self._ready)

    def pop(self) -> Optional[StageToRun]:
        """The ready task of highest priority (it stays unresolved until reported), or None."""
        while self._ready:
            _, key = heapq.heappop(self._ready)
            if key in self.unresolved:
                return self.tasks[key]
        return None

    def done(self, key: str) -> None:
        """``key`` finished well: release the tasks that only waited for it."""
        self.unresolved.discard(key)
        for child in self._dependents[key]:
            self._waiting[child].discard(key)
            if not self._waiting[child] and child in self.unresolved:
                heapq.heappush(self._ready, (-self.tasks[child].priority, child))

    def retry(self, key: str) -> None:
        """``key`` (popped, still unresolved) is ready to run again (once, however often this is called)."""
        if all(ready != key for _, ready in self._ready):
            heapq.heappush(self._ready, (-self.tasks[key].priority, key))

    def failed(self, key: str) -> list[str]:
        """``key`` failed: resolve and return every task that depends on it, transitively."""
        self.unresolved.discard(key)
        blocked, stack = [], list(self._dependents[key])
        while stack:
            child = stack.pop()
            if child in self.unresolved:
                self.unresolved.discard(child)
                blocked.append(child)
                stack.extend(self._dependents[child])
        return blocked
