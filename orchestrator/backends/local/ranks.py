"""The processes of one distributed stage on this machine (``local.ranks``).

Each rank is a fresh ``python`` process that calls the runner on the stage folder with
torch's environment variables set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``) and, with GPUs,
``CUDA_VISIBLE_DEVICES`` naming the GPUs of the group, so rank ``r`` uses the ``r``-th.
Ranks die with the driver (:mod:`.parent_death`). The group ends well when every rank exits
0; as soon as one fails the others are killed
(they would wait for it until the process group's timeout).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from orchestrator.backends.processes import free_port, rank_env, thread_env

#: lines of a failed rank's stderr reported with the failure.
STDERR_LINES = 12

_RANK_MAIN = """
import sys, traceback
from orchestrator.backends.local.parent_death import die_with_parent
from orchestrator.backends.processes import resolve_runner
die_with_parent(int(sys.argv[3]))
try:
    resolve_runner(sys.argv[1])(sys.argv[2])
except BaseException as error:
    print(type(error).__name__, file=sys.stderr)
    print("\\n".join(traceback.format_exc().rstrip().splitlines()[-20:]), file=sys.stderr)
    sys.exit(1)
"""


class RankGroup:
    """``size`` rank processes running ``runner`` on ``folder``; see the module docstring."""

    def __init__(self, runner: str, folder: Path, size: int, threads: int, gpus: list[str]):
        self.size = size
        self.gpus = gpus
        port = free_port("127.0.0.1")
        self.processes: list[subprocess.Popen] = []
        self.stderr = [tempfile.TemporaryFile() for _ in range(size)]
        for rank in range(size):
            env = dict(os.environ, **rank_env(rank, size, rank, size, "127.0.0.1", port),
                       **thread_env(threads),
                       # what the driver imports, as multiprocessing's spawned workers get it
                       PYTHONPATH=os.pathsep.join(entry for entry in sys.path if entry))
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            self.processes.append(subprocess.Popen(
                [sys.executable, "-c", _RANK_MAIN, runner, str(folder), str(os.getpid())], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.stderr[rank],
                start_new_session=True))  # Ctrl-C reaches the driver only; it stops the group
        self.pidfds = [os.pidfd_open(process.pid) for process in self.processes]

    @property
    def pid(self) -> int:
        """Rank 0's process id."""
        return self.processes[0].pid

    def outcome(self) -> Optional[tuple[bool, str, str]]:
        """``None`` while it runs; ``(True, "", "")`` when every rank exited 0; as soon as one
        failed, ``(False, error class, message)`` from its stderr, the others then killed."""
        codes = [process.poll() for process in self.processes]
        failed = [rank for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            self.stop()
            rank = failed[0]
            self.stderr[rank].seek(0)
            lines = self.stderr[rank].read().decode(errors="replace").rstrip().splitlines()
            raised = codes[rank] == 1 and lines and lines[0].isidentifier()
            error_class = lines[0] if raised else "WorkerDied"
            tail = "\n".join(lines[1 if raised else 0:][-STDERR_LINES:])
            return False, error_class, f"rank {rank} of {self.size} exited with code {codes[rank]}\n{tail}"
        if all(code == 0 for code in codes):
            self.close()
            return True, "", ""
        return None

    def stop(self) -> None:
        """Kill every rank still running and wait for them."""
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.wait()
        self.close()

    def close(self) -> None:
        """Release the group's file descriptors."""
        for fd in self.pidfds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.pidfds = []
