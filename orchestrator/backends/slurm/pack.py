"""GPU sharing on SLURM: several stages of one array wave run together in one job (a *pack*).

:class:`PackJob` is what such a job runs: one child process per stage (``python -m
orchestrator.backends.slurm.pack RUNNER CODE_DIR STAGE_DIR``), all at once on the job's
CPUs and GPU(s). Each child is a plain stage process with its own preemption handling:
on SIGUSR2 it calls the runner module's ``save_progress()`` and exits with
:data:`PREEMPTED`. On SLURM's warning signal submitit calls :meth:`PackJob.checkpoint`,
which passes the signal on to the running children, waits for them to save, and requeues
the pack with only its unfinished stages. A stage that raised stays failed across
requeues and fails the job once its siblings have ended (their results are kept).
A child killed by a signal (an infrastructure failure, :mod:`.attempts`) is started again,
up to ``retries`` times per stage, counted across requeues.

Every stage of a kind without ``ranks`` runs this way, a pack of one when the kind is not
shared, so a worker killed mid-training never takes its job down with it.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from orchestrator.backends.processes import split_runner, thread_env
from orchestrator.backends.slurm.attempts import describe_exit, exit_failure_class, record_failure, retriable
from orchestrator.backends.slurm.inputs import inputs_ready

#: exit status of a child stopped by SIGUSR2 after saving its progress (not a failure).
PREEMPTED = 75
#: seconds the pack waits for its children to save after the warning signal.
SAVE_TIMEOUT_S = 60.0
#: seconds a child stopped by SIGUSR2 waits for the pack's own signal before it is simply restarted.
STRAY_SIGNAL_WAIT_S = 30.0
_POLL_S = 0.5


class PackFailed(RuntimeError):
    """One or more stages of a pack raised (each one's traceback is in its log.txt and the job log)."""


class PackJob:
    """Runs the stage folders it is called with as concurrent child processes; checkpointable.

    ``threads`` is the math threads of each child; ``failed`` carries the stages that
    already failed (folder -> exit status) into a requeued pack, ``retried`` how often each
    stage was restarted after an infrastructure failure (at most ``retries``).
    """

    def __init__(self, runner: str, code_dir: Optional[str], threads: int = 1, failed: Optional[dict] = None,
                 retries: int = 0, retried: Optional[dict] = None):
        self.runner = runner
        self.code_dir = code_dir
        self.threads = threads
        self.failed = dict(failed or {})
        self.retries = retries
        self.retried = dict(retried or {})
        self._children: dict[str, subprocess.Popen] = {}
        self._ended: dict[str, int] = {}

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_children"], state["_ended"] = {}, {}  # processes of this allocation only
        return state

    def _spawn(self, folder: str) -> subprocess.Popen:
        env = dict(os.environ, **thread_env(self.threads))
        command = [sys.executable, "-m", __name__, self.runner, self.code_dir or "", folder]
        return subprocess.Popen(command, env=env)

    def _reap(self) -> None:
        """Note the exit status of every child that ended (SIGUSR2 held back, so :meth:`checkpoint` sees it all)."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
        try:
            for folder, child in list(self._children.items()):
                if child.poll() is not None:
                    self._ended[folder] = _status(child.returncode)
                    del self._children[folder]
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})

    def __call__(self, folders: list[str]) -> None:
        stray: dict[str, float] = {}  # folder -> when its child stopped on a signal the pack did not get
        for folder in folders:
            if folder not in self.failed and inputs_ready(folder):  # a blocked stage ends at once (see .inputs)
                self._children[folder] = self._spawn(folder)
        while self._children or stray:
            time.sleep(_POLL_S)  # the warning signal interrupts this; checkpoint() then takes over
            self._reap()
            for folder, status in list(self._ended.items()):
                if status == PREEMPTED:
                    # signalled on its own (not through the pack): wait for the pack's signal, else restart it
                    if time.monotonic() - stray.setdefault(folder, time.monotonic()) > STRAY_SIGNAL_WAIT_S:
                        del stray[folder], self._ended[folder]
                        self._children[folder] = self._spawn(folder)
                elif retriable(status) and self.retried.get(folder, 0) < self.retries:
                    del self._ended[folder]
                    self.retried[folder] = self.retried.get(folder, 0) + 1
                    record_failure(folder, status, retried=True)
                    print(f"prunesweep: stage {Path(folder).name}: worker {describe_exit(status)}; retry "
                          f"{self.retried[folder]} of {self.retries}", file=sys.stderr, flush=True)
                    self._children[folder] = self._spawn(folder)
                elif status != 0:
                    if retriable(status) and folder not in self.failed:
                        record_failure(folder, status, retried=False)
                    self.failed[folder] = status
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # all ended: see StageJob.__call__
        if self.failed:
            raise PackFailed("stage(s) of this pack failed: " + ", ".join(
                f"{Path(folder).name} ({describe_exit(status)}, {exit_failure_class(status)}"
                + (f", after {self.retried[folder]} retries" if self.retried.get(folder) else "") + ")"
                for folder, status in sorted(self.failed.items()))
                + "; each one's traceback is in its log.txt and above")

    def checkpoint(self, folders: list[str]):
        """Have every running stage save its progress, then requeue the pack with its unfinished stages."""
        import submitit

        for child in self._children.values():
            with _quietly():
                child.send_signal(signal.SIGUSR2)  # SLURM may have signalled it already: saving is idempotent
        deadline = time.monotonic() + SAVE_TIMEOUT_S
        for folder, child in list(self._children.items()):
            try:
                self._ended[folder] = _status(child.wait(timeout=max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                child.kill()  # it resumes from its last epoch checkpoint
                self._ended[folder] = PREEMPTED
            del self._children[folder]
        failed = dict(self.failed, **{f: s for f, s in self._ended.items() if s not in (0, PREEMPTED)})
        unfinished = [folder for folder in folders if self._ended.get(folder) != 0 and folder not in failed]
        return submitit.helpers.DelayedSubmission(
            PackJob(self.runner, self.code_dir, self.threads, failed, self.retries, self.retried),
            unfinished + sorted(failed))


def _status(returncode: int) -> int:
    # a child signalled before it installed its handler is stopped by SIGUSR2 itself: preempted too
    return PREEMPTED if returncode == -signal.SIGUSR2 else returncode


class _quietly:
    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        return kind is not None and issubclass(kind, ProcessLookupError)


def child_main(runner: str, code_dir: str, folder: str) -> int:
    """Run one stage of a pack; on SIGUSR2 save its progress and exit :data:`PREEMPTED`."""
    if code_dir and code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    module_name, function_name = split_runner(runner)
    module = importlib.import_module(module_name)
    stopping: list[int] = []

    def on_warning(signum, frame):
        if stopping:  # the pack forwards the signal SLURM may have sent already
            return
        stopping.append(signum)
        save_progress = getattr(module, "save_progress", None)
        if save_progress is not None:
            save_progress()
        raise SystemExit(PREEMPTED)

    signal.signal(signal.SIGUSR2, on_warning)
    try:
        getattr(module, function_name)(Path(folder))
    except Exception:
        import traceback

        traceback.print_exc()
        return 1
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(child_main(*sys.argv[1:4]))
