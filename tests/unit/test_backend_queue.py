"""The dependency queue the local and Ray backends schedule with."""
from __future__ import annotations

from pathlib import Path

from orchestrator.backends.base import DependencyQueue, StageToRun


def _task(key, *needs, priority=0.0):
    return StageToRun(key, Path(key), tuple(needs), priority)


def test_ready_tasks_come_by_priority_and_wait_for_their_dependencies():
    queue = DependencyQueue([_task("a", priority=1), _task("b", priority=5), _task("c", "a", "b", priority=9),
                             _task("d", "outside-this-run")])
    assert [queue.pop().key for _ in range(3)] == ["b", "a", "d"]  # d's dependency is not part of the run
    assert queue.pop() is None and not queue.has_ready()
    queue.done("a")
    assert not queue.has_ready()
    queue.done("b")
    assert queue.pop().key == "c"


def test_a_failure_blocks_every_dependent_and_nothing_else():
    queue = DependencyQueue([_task("a"), _task("b", "a"), _task("c", "b"), _task("d")])
    assert {queue.pop().key, queue.pop().key} == {"a", "d"}
    assert sorted(queue.failed("a")) == ["b", "c"]
    queue.done("d")
    assert not queue.unresolved and queue.pop() is None
