"""The one small interface every backend implements.

A backend receives tasks (a stage folder plus the keys of the tasks it waits for) and a
sink for events; it runs or submits them in dependency order and reports what happens.
It knows nothing of pruning: it calls the worker entry point, named as ``module:function``,
on a stage folder.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Protocol

#: the worker entry point every backend calls on a stage folder.
DEFAULT_RUNNER = "workers.entry:run_stage"


@dataclass(frozen=True)
class Task:
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

    def started(self, key: str, host: str, pid: Optional[int], job_id: Optional[str] = None) -> None:
        """A task began."""

    def finished(self, key: str) -> bool:
        """A task's process ended well; returns whether its artifacts really are done."""

    def failed(self, key: str, error_class: str, message: str) -> None:
        """A task raised, or its process died."""

    def blocked(self, key: str, because_of: str) -> None:
        """A task will not run because a task it waits for failed."""

    def interrupted(self, key: str) -> None:
        """A running task was stopped by the user (Ctrl-C)."""


class Backend(ABC):
    """Runs tasks somewhere."""

    name: str = "backend"
    #: True when ``run`` returns after submitting (the stages then run without a driver).
    detached: bool = False

    @abstractmethod
    def run(self, tasks: list[Task], events: Events) -> None:
        """Run (or submit) ``tasks``, reporting through ``events``."""
