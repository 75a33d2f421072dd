"""The one entry point every backend calls: :func:`run_stage` on a stage folder.

A backend about to lose the machine (preemption, time limit) calls :func:`save_progress`
(from :mod:`workers.training.preemption`): the running training saves a mid-epoch checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import stat
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from workers.stages import lock as stage_lock
from workers.stages.artifacts import (
    NotARegularFile,
    atomic_write_json,
    invalidate,
    open_regular,
    read_done,
    read_stage,
    verify_done,
    write_done,
)
from workers.stages.error_record import clear_error, write_error
from workers.stages.paths import CHECKPOINT_FILE, DONE_FILE, LOG_FILE, METRICS_FILE, PROVENANCE_FILE
from workers.stages.workspace_files import read_json
from workers.training.preemption import save_progress  # noqa: F401  (backends call it before a preemption)

log = logging.getLogger("workers")
#: lines of a traceback kept in the error record.
ERROR_LINES = 12


def open_log(stage_dir: Path) -> IO[str]:
    """``stage_dir/log.txt`` opened for appending, never through a symbolic link.

    A link, a FIFO or any other special file found there is no log of ours (a planted link would
    send our lines, and later log tails, outside the workspace): it is removed, never what it
    points to, and a new log is started. A folder there is left alone: the OSError names it.
    The caller holds the stage's lock, so the log is nobody else's.
    """
    path = Path(stage_dir) / LOG_FILE
    try:
        return open_regular(path)
    except NotARegularFile:
        try:
            found = os.lstat(path)
        except FileNotFoundError:  # removed meanwhile
            return open_regular(path)
        if stat.S_ISDIR(found.st_mode):
            raise
        os.unlink(path)  # unlink removes a link itself, never its target
    handle = open_regular(path)
    handle.write(f"(log.txt was {'a symbolic link' if stat.S_ISLNK(found.st_mode) else 'not a regular file'}: "
                 "removed, never followed; this log starts anew)\n")
    return handle


@contextmanager
def stage_log(stage_dir: Path) -> Iterator[None]:
    """Append the ``workers`` loggers' INFO lines of this thread to ``stage_dir/log.txt``."""
    handler = logging.StreamHandler(open_log(Path(stage_dir)))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    thread = threading.get_ident()
    handler.addFilter(lambda record: record.thread == thread)
    previous_level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)
        handler.close()
        handler.stream.close()


def resolve_deps(stage_dir: Path, deps: dict[str, str]) -> dict[str, Path]:
    """Map each role to its sibling folder and verify it is done (``CorruptArtifact`` otherwise)."""
    resolved = {}
    for role, name in sorted(deps.items()):
        path = Path(stage_dir).parent / name
        read_done(path)
        resolved[role] = path
    return resolved


def run_stage(stage_dir: Path | str) -> dict:
    """Run the stage in ``stage_dir`` unless it is already done; return its ``DONE.json`` manifest.

    A done stage (verified manifest) is skipped. A damaged one (manifest present but an
    artifact changed or missing) is invalidated and recomputed. Dependencies are verified
    before use and raise :class:`~workers.stages.artifacts.CorruptArtifact` naming the folder.
    Log lines and any traceback are appended to ``log.txt``; exceptions are re-raised, and
    recorded in ``error.json`` (:mod:`workers.stages.error_record`). While it runs, the stage's lock
    (:mod:`workers.stages.lock`) is held: a second process on the same stage gets
    :class:`~workers.stages.lock.StageBusy` instead of running beside it.

    Started as one rank of a distributed stage (:mod:`workers.training.distributed`: torch's
    ``WORLD_SIZE``/``RANK``... variables), every rank runs the stage on its shard of the
    batches; rank 0 decides whether it is done, logs and writes every file, and the
    others return its manifest.
    """
    from workers.training import distributed

    with distributed.process_group():
        return _run_stage(Path(stage_dir).absolute())


def _run_stage(stage_dir: Path) -> dict:
    from workers.training import distributed

    if distributed.current() is None and verify_done(stage_dir)[0]:  # done: skipped without touching a file
        return read_json(stage_dir / DONE_FILE)
    # rank 0 holds the stage's lock for the whole run: while it lives no other process runs the stage
    with stage_lock.hold(stage_dir) if distributed.is_writer() else contextlib.nullcontext():
        return _run_locked(stage_dir)


def _run_locked(stage_dir: Path) -> dict:
    from workers.stages.contract import StageContext
    from workers.stages.registry import check_metrics, parse_config, stage_kind
    from workers.training import distributed

    stage = read_stage(stage_dir)
    done, reason = distributed.broadcast_from_writer(verify_done(stage_dir))
    if done:
        return read_json(stage_dir / DONE_FILE)
    kind, key = stage.get("kind"), stage.get("key", stage_dir.name)
    writer = distributed.is_writer()
    if writer:
        clear_error(stage_dir)  # a record left now belongs to this attempt
    with stage_log(stage_dir) if writer else contextlib.nullcontext():
        try:
            if reason != "not run" and writer:
                log.warning("stage %s was damaged (%s): recomputing it", key, reason)
                invalidate(stage_dir)
            registered = stage_kind(kind, key)
            # parsed only now that the stage runs: a done stage of an older version is never re-read
            config = parse_config(kind, key, stage.get("config") or {})
            ranks = distributed.current()
            log.info("stage %s (%s) starting%s", key, kind,
                     f" on {ranks.world_size} ranks" if ranks and writer else "")
            started = time.perf_counter()
            if writer:
                _record_provenance(stage_dir)
            distributed.barrier()  # every rank past the invalidation before any reads
            deps = resolve_deps(stage_dir, stage.get("deps") or {})
            context = StageContext(stage_dir=stage_dir, key=key, config=config, deps=deps)
            outcome = registered.load()(context)  # torch is imported only to run
            check_metrics(registered.name, key, outcome.metrics)
            distributed.barrier()  # rank 0's artifacts are all written
            if writer:
                atomic_write_json(stage_dir / METRICS_FILE, outcome.metrics)
                manifest = write_done(stage_dir, [*outcome.files, METRICS_FILE], outcome.metrics)
                (stage_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
            distributed.barrier()
            if not writer:
                return read_json(stage_dir / DONE_FILE)
            log.info("stage %s (%s) done in %.2f s", key, kind, time.perf_counter() - started)
            return manifest
        except (SystemExit, KeyboardInterrupt) as stop:  # preempted, timed out or stopped: not a failure
            log.warning("stage %s (%s) stopped (%s); its checkpoint is kept", key, kind, type(stop).__name__)
            raise
        except BaseException as error:
            log.exception("stage %s (%s) failed", key, kind)
            if writer:  # tells a backend that sees only an exit status that the stage's code raised
                lines = traceback.format_exc().rstrip().splitlines()
                write_error(stage_dir, error, "\n".join(lines[-ERROR_LINES:]))
            raise


def _record_provenance(stage_dir: Path) -> None:
    """Write what runs this attempt (:mod:`workers.stages.provenance`); a failure costs only the record."""
    from workers.stages.artifacts import DiskFull
    from workers.stages.provenance import write_provenance

    try:
        write_provenance(stage_dir)
    except DiskFull:  # the stage could write nothing else either: as any write, it fails the stage
        raise
    except Exception as error:  # noqa: BLE001 - the code, packages or machine could not be told
        log.warning("no %s: %s: %s", PROVENANCE_FILE, type(error).__name__, error)
