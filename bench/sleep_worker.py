"""A stand-in worker for checking the campaign simulator against a real scheduler: it sleeps.

Each stage folder's ``stage.json`` holds, besides the ``deps`` every backend reads,
``sleep_s`` (the stage's work, in seconds), ``epochs`` (a checkpoint every
``sleep_s / epochs`` seconds of work; 0: none) and ``fail``: ``None``, ``"signal"`` (the
first attempt kills itself with SIGKILL once ``fail_at x sleep_s`` of work is reached: an
infrastructure failure the SLURM job retries) or ``"raise"`` (every attempt raises there: a
deterministic failure). A resumed attempt sleeps only the work after its last checkpoint,
as a training stage resumes from its last epoch. ``times.jsonl`` records each attempt's
start and end (wall clock); ``DONE.json`` is written when the work is done, so the backends'
input check (:mod:`orchestrator.backends.slurm.inputs`) sees the stage done.

This module is what ``bench/campaign_validation.py`` names as the SLURM backend's runner
(``bench.sleep_worker:sleep_stage``); it imports nothing heavy.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

#: the file of the work kept (seconds) at the last checkpoint.
PROGRESS_FILE = "progress.json"
#: one JSON line per attempt: {"attempt", "start", "end", "how"}.
TIMES_FILE = "times.jsonl"


class InjectedFailure(RuntimeError):
    """The deterministic failure a stage was told to have."""


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as out:
        out.write(json.dumps(record) + "\n")
        out.flush()
        os.fsync(out.fileno())


def _write(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def attempts_so_far(folder: Path) -> int:
    """How many attempts of the stage in ``folder`` started before this one."""
    try:
        lines = Path(folder, TIMES_FILE).read_text().splitlines()
    except OSError:
        return 0
    return sum("start" in json.loads(line) for line in lines if line.strip())


def sleep_stage(folder: Path) -> None:
    """Sleep the stage's work from its last checkpoint, failing where ``stage.json`` says."""
    folder = Path(folder)
    start = time.time()
    config = json.loads((folder / "stage.json").read_text())
    attempt = attempts_so_far(folder)
    _append(folder / TIMES_FILE, {"attempt": attempt, "start": start, "job_start": job_started(),
                                     "process_start": _process_start(os.getpid())})
    total, epochs = float(config["sleep_s"]), int(config.get("epochs") or 0)
    try:
        kept = float(json.loads((folder / PROGRESS_FILE).read_text())["kept_s"])
    except (OSError, ValueError, KeyError):
        kept = 0.0
    fail, fail_at = config.get("fail"), float(config.get("fail_at") or 0.0) * total
    stop_at = None
    if fail == "raise" or (fail == "signal" and attempt == 0):
        stop_at = fail_at if fail_at >= kept else None
    step = total / epochs if epochs else total
    began, reached = time.monotonic(), kept
    while True:
        target = min(total, (int(reached / step + 1e-9) + 1) * step) if epochs else total
        if stop_at is not None and stop_at < target:
            time.sleep(max(0.0, began + stop_at - kept - time.monotonic()))
            _append(folder / TIMES_FILE, {"attempt": attempt, "end": time.time(), "how": fail})
            if fail == "raise":
                raise InjectedFailure(f"stage {folder.name}: injected deterministic failure")
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(max(0.0, began + target - kept - time.monotonic()))
        reached = target
        if reached >= total - 1e-9:
            break
        _write(folder / PROGRESS_FILE, {"kept_s": reached})
    _write(folder / "DONE.json", {"stage": folder.name})
    _append(folder / TIMES_FILE, {"attempt": attempt, "end": time.time(), "how": "done"})


def _process_start(pid: int) -> float:
    """When process ``pid`` started (wall clock), from /proc (to the clock tick)."""
    ticks = os.sysconf("SC_CLK_TCK")
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return time.time() - uptime + started


def job_started() -> float | None:
    """When this stage's job started on its node: the start of the batch script above this process."""
    pid = os.getpid()
    try:
        while pid > 1:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if Path(f"/proc/{parent}/comm").read_text().strip() == "slurmstepd":
                return _process_start(pid)
            pid = parent
    except (OSError, ValueError, IndexError):
        return None
    return None
