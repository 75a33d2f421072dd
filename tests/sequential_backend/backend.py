"""Runs ready stages one at a time, each as ``python -c`` calling the runner on its folder."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

from orchestrator.backends.base import DEFAULT_RUNNER, Backend, DependencyQueue, Events, StageToRun
from orchestrator.backends.processes import thread_env

_STAGE = "import sys; from orchestrator.backends.processes import resolve_runner; resolve_runner(sys.argv[1])(sys.argv[2])"


class SequentialBackend(Backend):
    """Stages in dependency order, one process each, waiting for each one."""

    name = "sequential"

    def __init__(self, settings, workspace, runner: str = DEFAULT_RUNNER):
        self.threads = int(settings.get("threads", 1))
        self.runner = runner

    def run(self, tasks: list[StageToRun], events: Events) -> None:
        """Run every task, blocking; a failure blocks the stages that wait for it."""
        queue = DependencyQueue(tasks)
        env = dict(os.environ, **thread_env(self.threads), PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        while queue.has_ready():
            task = queue.pop()
            process = subprocess.Popen([sys.executable, "-c", _STAGE, self.runner, str(task.folder)], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            events.started(task.key, socket.gethostname(), process.pid)
            _, stderr = process.communicate()
            if process.returncode == 0 and events.finished(task.key):
                queue.done(task.key)
                continue
            if process.returncode != 0:
                events.failed(task.key, "StageFailed", stderr[-2000:])
            for child in queue.failed(task.key):
                events.blocked(child, task.key)


BACKEND = SequentialBackend
