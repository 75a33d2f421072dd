"""The embedded default: ready stages run in parallel worker processes on this machine.

Each worker process imports the entry point once and then runs one stage after another
(one thread each by default, one process per core). A stage that raises is reported
with its traceback's last lines, and is not retried: a deterministic failure. A worker
process that dies (killed by a signal) is replaced and its stage is started again, from
its last epoch checkpoint, up to ``retries`` times (:mod:`orchestrator.backends.failure_classes`).
Ctrl-C terminates the workers and reports the running stages as interrupted; whatever
epochs they had checkpointed are kept. Workers die with the driver, even when it alone is
killed (:mod:`.parent_death`). A stage this run waits for that a process of an earlier
driver still runs (it holds the stage's lock, :mod:`workers.stages.lock`) is waited for,
never started beside itself.
"""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Optional

from orchestrator.backends.base import DEFAULT_RUNNER, Backend, Checks, DependencyQueue, Events, StageToRun, Verdict
from orchestrator.backends.cancel_request import cancel_reason
from orchestrator.backends.failure_classes import DEFAULT_RETRIES, RetryBudget, classify
from orchestrator.backends.local.gpus import least_used_gpu, visible_gpus
from orchestrator.backends.local.ranks import RankGroup
from orchestrator.backends.processes import resolve_runner, thread_env
from workers.stages.error_record import read_error
from workers.stages.lock import StageBusy, holder
from workers.stages.paths import STAGE_LOCK_FILE

#: seconds between looks at the lock of a stage a process not ours still runs.
HELD_POLL_S = 1.0
#: seconds a cancelled stage has to end on SIGTERM before its process group gets SIGKILL.
CANCEL_GRACE_S = 10.0


def _worker_main(runner: str, threads: int, gpu: Optional[str], connection, driver_pid: int) -> None:
    """Body of one worker process: run each stage folder it is sent in a process of its own
    (:mod:`.stage_process`) until told to stop."""
    from orchestrator.backends.local.parent_death import die_with_parent
    from orchestrator.backends.local.stage_process import run_in_own_process

    die_with_parent(driver_pid)
    os.environ.update(thread_env(threads))
    if gpu is not None:  # before anything initialises CUDA: the worker sees this GPU only
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C does
    run_stage = resolve_runner(runner)
    while True:
        try:
            folder = connection.recv()
        except EOFError:  # the driver is gone (killed): nothing more will come
            return
        if folder is None:
            return
        connection.send(run_in_own_process(run_stage, Path(folder)))


def _leads_group(pid: int) -> bool:
    """Whether ``pid`` leads a process group of its own (a stage process does, :mod:`.stage_process`;
    a stage run by an older prunesweep inside its pool worker does not: then only it is signalled)."""
    try:
        return os.getpgid(pid) == pid
    except ProcessLookupError:
        return False


def _signal(pid: int, group: Optional[int], number: int) -> None:
    try:
        if group is not None:
            os.killpg(group, number)
        else:
            os.kill(pid, number)
    except ProcessLookupError:  # it ended meanwhile
        pass


class _Worker:
    def __init__(self, context, runner: str, threads: int, gpu: Optional[str]):
        self.gpu = gpu
        self.connection, child = context.Pipe()
        # not daemonic: a stage's DataLoader starts processes of its own, which daemons may not
        self.process = context.Process(target=_worker_main, args=(runner, threads, gpu, child, os.getpid()),
                                       daemon=False)
        self.process.start()
        child.close()
        self.key: Optional[str] = None

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


class LocalBackend(Backend):
    """Runs tasks in ``workers`` processes on this machine, in dependency order.

    With GPUs (:func:`~orchestrator.backends.local.gpus.visible_gpus`) each worker sees one of
    them, spread evenly; ``workers`` then defaults to ``stages_per_gpu`` per GPU, else to
    one per core. A stage of a kind in ``ranks`` runs as that many rank processes
    (:class:`~orchestrator.backends.local.ranks.RankGroup`), holding as many worker slots.
    """

    name = "local"

    def __init__(self, workers: Optional[int] = None, threads: int = 1, runner: str = DEFAULT_RUNNER,
                 stages_per_gpu: int = 1, gpus: Optional[list[str]] = None,
                 ranks: Optional[dict[str, int]] = None, retries: int = DEFAULT_RETRIES):
        self.retries = retries
        self.gpus = visible_gpus() if gpus is None else list(gpus)
        self.ranks = dict(ranks or {})
        default = len(self.gpus) * stages_per_gpu if self.gpus else len(os.sched_getaffinity(0))
        self.workers = workers or default
        self.threads = threads
        self.runner = runner

    @classmethod
    def create(cls, settings, workspace, runner: str = DEFAULT_RUNNER, workers: Optional[int] = None) -> LocalBackend:
        """``workers`` (the command line's) wins over the sweep's ``local.workers``."""
        return cls(workers=workers or settings.get("workers"), runner=runner,
                   stages_per_gpu=settings.get("stages_per_gpu", 1), ranks=settings.get("ranks"),
                   retries=settings.get("retries", DEFAULT_RETRIES))

    @classmethod
    def judge_running(cls, rows, checks: Checks) -> dict[str, Verdict]:
        """A stage runs while a live process holds its lock (reconcile asked that first), or while its
        driver holds the workspace lock (the stage's process may not have locked yet, or has just ended:
        the driver records how). Its processes die with the driver (:mod:`.parent_death`)."""
        if checks.driver_alive():
            return {}
        return {row["key"]: Verdict("planned", "Interrupted", (
            f"no process holds its lock (it ran as pid {row['pid']} on {row['host']}); it will be rerun"))
            for row in rows}

    @classmethod
    def cancel_stage(cls, workspace: Path, row, running) -> str:
        """Signal the stage's own process group (:mod:`.stage_process`): SIGTERM, then SIGKILL to what
        is left after :data:`CANCEL_GRACE_S`; its driver records it cancelled. The process is the one
        holding the stage's lock, read back checked (:mod:`workers.stages.lock`); UserError when none
        does or it runs on another machine."""
        from orchestrator.errors import UserError
        from orchestrator.state.workspace import stage_dir

        folder = stage_dir(workspace, row["key"])
        held = holder(folder)
        if held is None or held.damage or held.pid is None:
            why = f"its {STAGE_LOCK_FILE} record is damaged ({held.damage})" if held and held.damage else \
                "no process holds its lock"
            raise UserError(f"--stage {row['key']}: cannot be stopped from here: {why}")
        if held.host != socket.gethostname():
            raise UserError(f"--stage {row['key']}: runs on {held.host} (pid {held.pid}): run `prunesweep cancel` "
                            "there")
        group = held.pid if _leads_group(held.pid) else None
        _signal(held.pid, group, signal.SIGTERM)
        deadline = time.monotonic() + CANCEL_GRACE_S
        while holder(folder) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if holder(folder) is not None:
            _signal(held.pid, group, signal.SIGKILL)
        return f"signalled {'process group' if group else 'process'} {held.pid} on {held.host}"

    def _group_gpus(self, size: int, pool: list[_Worker], groups: dict[str, RankGroup]) -> list[str]:
        """The GPUs a distributed stage of ``size`` ranks gets: the least used ones, one per
        rank while there are enough (ranks share them beyond that)."""
        in_use = [w.gpu for w in pool if w.key is not None] + [gpu for g in groups.values() for gpu in g.gpus]
        ranked = sorted(self.gpus, key=lambda gpu: (in_use.count(gpu), self.gpus.index(gpu)))
        return ranked[:size]

    def run(self, tasks: list[StageToRun], events: Events) -> None:
        """Run every task, blocking until all have finished, failed or been blocked."""
        if not tasks:
            return
        run = _LocalRun(self, tasks, events)
        try:
            while run.queue.unresolved:
                run.start_ready()
                if not run.busy():
                    break  # nothing can run: everything left is blocked
                run.collect()
        except KeyboardInterrupt:
            run.interrupt()
            raise
        finally:
            run.close()


class _LocalRun:
    """One ``LocalBackend.run``: its queue, its worker pool and its distributed rank groups."""

    def __init__(self, backend: LocalBackend, tasks: list[StageToRun], events: Events):
        import multiprocessing  # here, not at the top: plan, status and cancel import this module too

        self.backend, self.events = backend, events
        self.queue = DependencyQueue(tasks)
        self.context = multiprocessing.get_context("spawn")
        self.pool: list[_Worker] = []
        self.groups: dict[str, RankGroup] = {}  # distributed stages running, by key
        self.held: Optional[StageToRun] = None  # a popped task waiting for enough free slots
        self.host = socket.gethostname()
        self.budget = RetryBudget(backend.retries)

    def busy(self) -> bool:
        """Whether a worker or a rank group is running a stage, or an orphan is waited for."""
        return any(worker.key is not None for worker in self.pool) or bool(self.groups) or bool(self.queue.held)

    def start_ready(self) -> None:
        """Start ready tasks, by priority, while the pool has room for them."""
        backend = self.backend
        while self.held is not None or self.queue.has_ready():
            task = self.held or self.queue.pop()
            if task is None:
                break
            size = backend.ranks.get(task.kind, 1)
            running = sum(w.key is not None for w in self.pool) + sum(g.size for g in self.groups.values())
            if running and running + size > backend.workers:  # a stage too big for the pool runs alone
                self.held = task
                break
            self.held = None
            if size > 1:
                self.groups[task.key] = RankGroup(backend.runner, task.folder, size, backend.threads,
                                                  backend._group_gpus(size, self.pool, self.groups))
                self.events.started(task.key, self.host, self.groups[task.key].pid)
                continue
            idle = [worker for worker in self.pool if worker.key is None]
            worker = idle.pop() if idle else None
            if worker is None:
                gpu = least_used_gpu(backend.gpus, [w.gpu for w in self.pool])
                worker = _Worker(self.context, backend.runner, backend.threads, gpu)
                self.pool.append(worker)
            worker.key = task.key
            worker.connection.send(str(task.folder))
            self.events.started(task.key, self.host, worker.process.pid)

    def collect(self) -> None:
        """Wait until a stage ends, then report every stage that has ended."""
        busy = [worker for worker in self.pool if worker.key is not None]
        waitables = ([w.connection for w in busy] + [w.process.sentinel for w in busy]
                     + [fd for group in self.groups.values() for fd in group.pidfds])
        timeout = HELD_POLL_S if self.queue.held else None
        if waitables:
            from multiprocessing.connection import wait

            signalled = wait(waitables, timeout)
        else:
            time.sleep(HELD_POLL_S)
            signalled = []
        self.queue.release_free()
        for key, group in list(self.groups.items()):
            outcome = group.outcome()
            if outcome is not None:
                del self.groups[key]
                ok, error_class, message = outcome
                self._ended(key, "ok" if ok else "error", error_class, message)
        for worker in busy:
            stage = worker.key
            if stage is None:
                continue
            report = None
            if worker.connection in signalled or worker.connection.poll():
                try:
                    report = worker.connection.recv()
                except EOFError:  # the worker died: its end of the pipe closed without a report
                    pass
            if report is not None:
                worker.key = None
                if report[0] == "died":  # the stage's own process ended without a word; its worker lives on
                    self._died(stage, report[1], report[2])
                else:
                    self._ended(stage, *report)
            elif worker.process.sentinel in signalled or not worker.process.is_alive():
                worker.process.join()
                self.pool.remove(worker)
                self._died(stage, worker.process.exitcode, worker.process.pid)

    def _died(self, key: str, exit_code: Optional[int], pid: Optional[int]) -> None:
        """The process running ``key`` (``pid``) ended with ``exit_code`` without reporting."""
        record = read_error(self.queue.tasks[key].folder)
        if record is not None and record.get("pid") != pid:
            record = None  # an earlier attempt's
        failure = classify(exit_code=exit_code, error_record=record)
        self._ended(key, "died", failure.error_class, failure.message)

    def _ended(self, key: str, status: str, error_class: str, message: str) -> None:
        """A stage's process reported ``status`` (``ok``, ``error``; ``died``: it ended without reporting)."""
        if status == "ok" and self.events.finished(key):
            self.queue.done(key)
            return
        if status == "error" and error_class == StageBusy.__name__:
            self.queue.wait_for_holder(key)  # a process not ours runs it: run it once that ends
            return
        cancelled = cancel_reason(self.queue.tasks[key].folder) if status in ("error", "died") else None
        if cancelled is not None:  # `prunesweep cancel --stage` stopped it: not a failure, never retried
            self.events.cancelled(key, cancelled)
        elif status in ("error", "died"):
            failure = classify(reported=(error_class, message))
            if self.budget.spend(key, failure):
                self.events.retrying(key, failure.error_class, failure.message)
                self.queue.retry(key)
                return
            self.events.failed(key, error_class, self.budget.note(key, failure))
        for child in self.queue.failed(key):
            self.events.blocked(child, key)

    def interrupt(self) -> None:
        """Ctrl-C: stop every running stage and report it interrupted."""
        for key, group in self.groups.items():
            group.stop()
            self.events.interrupted(key)
        self.groups.clear()
        for worker in self.pool:
            worker.stop()
            if worker.key is not None:
                self.events.interrupted(worker.key)
        self.pool.clear()

    def close(self) -> None:
        """Let idle workers exit, and stop those that do not."""
        for group in self.groups.values():
            group.stop()
        for worker in self.pool:
            try:
                worker.connection.send(None)
            except (BrokenPipeError, OSError):
                pass
        for worker in self.pool:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.stop()


#: the class the backend registry builds.
BACKEND = LocalBackend
