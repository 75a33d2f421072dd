"""Bring the ledger and the results table in line with the artifacts on disk.

Artifacts are the truth: a stage whose checksummed artifacts exist is done whatever the
ledger says; a stage whose lock a live process holds (:mod:`workers.stages.lock`) is running,
whatever the ledger says, and is never touched; a damaged one is invalidated and planned
again; a stage the ledger calls running whose backend says it is gone is planned again.
Only verified artifacts are ingested into the results table, and each cell once.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Optional

import results
from orchestrator.backends import backend_class, by_backend
from orchestrator.backends.cancel_request import cancel_reason
from orchestrator.errors import UserError
from orchestrator.state.artifact_stamps import folder_glance, verify_stage
from orchestrator.state.central_results import push_waiting
from orchestrator.state.ledger import Ledger
from orchestrator.state.workspace import WorkspaceLock
from workers.stages.artifacts import invalidate
from workers.stages.lock import holder
from workers.stages.paths import DONE_FILE, LOG_FILE, STAGES_DIR, stage_dir
from workers.stages.workspace_files import read_json, read_tail, unreadable

LOG_TAIL_LINES = 12


class _LedgerChecks:
    """What a backend may ask while judging its running stages (see :class:`~.backends.base.Checks`)."""

    def __init__(self, workspace: Path, lock_held_by_us: bool, ledger: Optional[Ledger] = None):
        self.workspace = workspace
        self.fresh = lock_held_by_us
        self._driver_alive: Optional[bool] = None
        self._ledger = ledger

    def driver_alive(self) -> bool:
        if self._driver_alive is None:
            self._driver_alive = not self.fresh and WorkspaceLock(self.workspace).holder() is not None
        return self._driver_alive

    def log_tail(self, key: str) -> str:
        return log_tail(self.workspace, key)

    def stage_states(self) -> dict[str, str]:
        """Stage key -> the ledger's state of every stage, now."""
        return dict(self._ledger.stage_states()) if self._ledger is not None else {}


def reconcile(workspace: Path, ledger: Ledger, lock_held_by_us: bool = False, rehash: bool = False,
              glance: bool = False, manifests: Optional[dict[str, dict]] = None) -> set[str]:
    """Correct every stage's state from disk; return the keys verified done.

    Artifacts whose stamps are unchanged since they last hashed right are trusted
    (:mod:`orchestrator.state.artifact_stamps`); ``rehash`` checksums every one of them again;
    ``glance`` (reading commands) trusts a done stage whose folder is unchanged.
    ``manifests`` receives the manifest of every stage that was hashed, by key.
    A stage the ledger calls running without artifacts is judged by the backend that runs it.
    """
    workspace = Path(workspace)
    with ledger.batched():  # thousands of corrections commit together, not one statement each
        return _reconcile(workspace, ledger, lock_held_by_us, rehash, glance and not rehash,
                          {} if manifests is None else manifests)


def _reconcile(workspace: Path, ledger: Ledger, lock_held_by_us: bool, rehash: bool, glance: bool,
               manifests: dict[str, dict]) -> set[str]:
    done = set()
    running = []
    folders = ledger.all_folder_stamps()
    stamps: Optional[dict[str, dict[str, list[int]]]] = None  # read only when a glance is not enough
    stages_dir = os.path.join(workspace, STAGES_DIR) + os.sep
    was_running = ledger.stages_in(("running",))
    running_rows = {row["key"]: row for row in was_running}
    for key, state in ledger.stage_states():
        if glance and folder_glance(stages_dir + key, folders.get(key)):
            ok, reason = True, ""  # its folder is as it was when its artifacts last checked out: one stat
        else:
            if stamps is None:
                stamps = ledger.all_verified_stamps()  # one query, not one per stage
            ok, reason = verify_stage(workspace, ledger, key, rehash, stamps.get(key), manifests,
                                      folders.get(key))
        if ok:
            done.add(key)
            if state != "done":
                ledger.mark_done(key)
            continue
        held = holder(stage_dir(workspace, key))
        row = running_rows.get(key)
        if held is not None:  # a live process runs it (maybe an orphan of a dead driver): trusted over the ledger
            if row is None or (row["host"], row["pid"]) != (held.host, held.pid):
                ledger.mark_held(key, held.host, held.pid)
            continue
        if reason != "not run" and state != "running":
            if ledger.writes_persist:  # a reading command (a dry run) changes nothing on disk
                invalidate(stage_dir(workspace, key))
            ledger.mark_planned(key, "CorruptArtifact", f"artifact damaged ({reason}); it will be rerun")
        elif state == "done":
            ledger.mark_planned(key, "MissingArtifact",
                                "the ledger said done but its artifacts are gone; it will be rerun")
        elif row is not None:
            running.append(row)
    checks = _LedgerChecks(workspace, lock_held_by_us, ledger)
    for name, rows in by_backend(running).items():
        for key, verdict in backend_class(name).judge_running(rows, checks).items():
            cancelled = cancel_reason(stage_dir(workspace, key)) if verdict.state != "running" else None
            if cancelled is not None:  # it ended because the user cancelled it (prunesweep cancel --stage)
                ledger.mark_cancelled(key, cancelled)
            elif verdict.state == "blocked":
                ledger.mark_blocked(key, verdict.message, cancelled=verdict.error_class == "DependencyCancelled")
            elif verdict.state == "failed":
                ledger.mark_failed(key, verdict.error_class, verdict.message)
            elif verdict.state == "planned":
                ledger.mark_planned(key, verdict.error_class, verdict.message)
    _keep_job_retries(workspace, ledger, was_running)
    return done


def _keep_job_retries(workspace: Path, ledger: Ledger, rows: list) -> None:
    """Count in the ledger the attempts the jobs of these (running until now) stages retried by
    themselves, each line naming its job: read again, a record replaces its lines, never adds twice."""
    for name, group in by_backend(rows).items():
        for key, retries in backend_class(name).job_retries(workspace, group).items():
            if retries:  # all of one job, the stage's own (see the hook): one read and one write per stage
                ledger.set_job_retries(key, retries[0].job_id, [
                    (f"on {retry.host or '?'} at {retry.at or '?'}", f"{retry.failure_class}: {retry.why}")
                    for retry in retries])


def log_tail(workspace: Path, key: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a stage's log, or an empty string (see :func:`file_tail`)."""
    return file_tail(stage_dir(workspace, key) / LOG_FILE, workspace, lines)


def file_tail(path: Path, workspace: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log in ``workspace``, or an empty string when there is none. A link, a FIFO
    or a linked folder on the way is named, never read: a colleague's link must not put a file of
    yours into what status prints or a report shows."""
    inside = os.path.abspath(path).startswith(os.path.join(os.path.abspath(workspace), ""))
    try:
        text = read_tail(path, workspace if inside else None)
    except FileNotFoundError:
        return ""
    except OSError as error:
        return f"({unreadable(path, error)}; not shown)"
    return "\n".join(text.rstrip().splitlines()[-lines:])


class IngestSession:
    """What successive :func:`ingest_results` calls of one driver run share: an open results
    connection and the sweeps' settings already read. Close it when the run ends."""

    def __init__(self, workspace: Path):
        self.recorder = results.Recorder(workspace)
        self.specs: dict[str, dict] = {}

    def close(self) -> None:
        """Close the results connection."""
        self.recorder.close()


def ingest_results(workspace: Path, ledger: Ledger, done: Iterable[str],
                   session: Optional[IngestSession] = None, manifests: Optional[dict[str, dict]] = None) -> int:
    """Record a results row for each cell whose stage is in ``done`` and not yet recorded.

    The row is built by :func:`results.build_row` from the cell, its sweep's settings, its
    stage's manifest metrics and those of the dense run behind it. A reader's copy of an
    older ledger (``ledger.writes_persist`` False) records nothing, since reading never writes.

    The cost follows the rows to add, not the workspace: the cells of a few stages are read
    by key, their rows looked up by primary key, and a sweep's settings, a dependency or a
    manifest are read only for a row that is missing (the driver calls this once per
    finished stage, with a ``session`` that keeps the results table open). Only for many
    stages at once (a ``status``) are the cells and recorded keys read in one pass each.
    ``manifests``: stage key -> its ``DONE.json`` already read (by :func:`reconcile`).
    """
    workspace = Path(workspace)
    done = set(done)
    many = len(done) > _BY_KEY_LIMIT
    cells = [cell for cell in ledger.cells() if cell["stage_key"] in done] if many else ledger.cells_of(done)
    identities = [(cell["sweep"], cell["mask_source"], cell["init"], cell["rewind"], cell["nominal_fraction"],
                   cell["seed"], cell["stage_key"]) for cell in cells]
    try:
        recorded = (session.recorder.recorded_among(identities) if session is not None
                    else results.recorded_among(workspace, identities))
    except results.StoreVersionError as error:
        raise UserError(str(error)) from None
    if not ledger.writes_persist:
        return 0
    missing = [cell for cell, identity in zip(cells, identities, strict=True) if identity not in recorded]
    if not missing:
        push_waiting(workspace, ledger)  # rows left waiting by an earlier command go now
        return 0
    rows = _build_rows(workspace, ledger, missing, session.specs if session is not None else {}, manifests)
    added = session.recorder.record(rows) if session is not None else results.record(workspace, rows)
    push_waiting(workspace, ledger)  # to the lab's central database, when one is set; never raises
    return added


def unrecorded_rows(workspace: Path, ledger: Ledger, done: Iterable[str],
                    manifests: Optional[dict[str, dict]] = None) -> list[dict]:
    """The rows :func:`ingest_results` would record for ``done``, built but not written.

    A reading command on a workspace it must not write (its ledger is an in-memory copy) shows
    them with the recorded ones (:func:`results.load`'s ``pending``): cells whose stages finished
    since the last writer ran are then in ``results`` as they are counted done in ``status``.
    """
    workspace = Path(workspace)
    done = set(done)
    cells = ([cell for cell in ledger.cells() if cell["stage_key"] in done] if len(done) > _BY_KEY_LIMIT
             else ledger.cells_of(done))
    identities = [(cell["sweep"], cell["mask_source"], cell["init"], cell["rewind"], cell["nominal_fraction"],
                   cell["seed"], cell["stage_key"]) for cell in cells]
    try:
        recorded = results.recorded_among(workspace, identities)
    except results.StoreVersionError as error:
        raise UserError(str(error)) from None
    missing = [cell for cell, identity in zip(cells, identities, strict=True) if identity not in recorded]
    return _build_rows(workspace, ledger, missing, {}, manifests) if missing else []


def reconcile_and_record(workspace: Path, ledger: Ledger, rehash: bool = False) -> set[str]:
    """What a reading command does first: :func:`reconcile` with a glance at done stages (every
    artifact checksummed again with ``rehash``), then :func:`ingest_results` of the finished cells,
    each manifest read once. Returns the keys verified done."""
    manifests: dict[str, dict] = {}
    done = reconcile(workspace, ledger, rehash=rehash, glance=True, manifests=manifests)
    ingest_results(workspace, ledger, done, manifests=manifests)
    return done


def bring_results_up_to_date(workspace: Path, ledger: Ledger) -> list[dict]:
    """Reconcile ``workspace`` and record its finished cells, as a reading command does; return the
    rows it could not record because it must not write (empty when they were recorded)."""
    if ledger.writes_persist:
        reconcile_and_record(workspace, ledger)
        return []
    manifests: dict[str, dict] = {}
    done = reconcile(workspace, ledger, glance=True, manifests=manifests)
    return unrecorded_rows(workspace, ledger, done, manifests)


def _build_rows(workspace: Path, ledger: Ledger, missing: list, specs: dict[str, dict],
                read: Optional[dict[str, dict]] = None) -> list[dict]:
    """The results rows of the cells ``missing``, from their manifests (``read``: those already read, by
    stage key) and sweeps' settings."""
    manifests: dict[str, dict] = dict(read or {})

    def metrics_of(key: str) -> dict:
        if key not in manifests:
            manifests[key] = read_json(stage_dir(workspace, key) / DONE_FILE, workspace)
        return manifests[key]["metrics"]

    deps = ledger.deps() if len(missing) > _BY_KEY_LIMIT else _DepsByKey(ledger)  # one query, or a few by key
    rows = []
    for cell in missing:
        key = cell["stage_key"]
        if cell["sweep"] not in specs:
            specs[cell["sweep"]] = ledger.sweep_spec(cell["sweep"])
        dense = results.dense_ancestor(key, deps)
        try:
            dense_metrics = metrics_of(dense) if dense is not None else None
        except (OSError, ValueError, KeyError):
            dense_metrics = None  # the dense run is being recomputed: natural_sparsity stays empty
        rows.append(results.build_row({name: cell[name] for name in cell.keys()}, specs[cell["sweep"]],
                                      metrics_of(key), dense_metrics))
    return rows


#: above this many stages, ingestion reads the cells and recorded keys in one pass each.
_BY_KEY_LIMIT = 64


class _DepsByKey(Mapping[str, Mapping[str, str]]):
    """The ``deps`` mapping :func:`results.dense_ancestor` walks, read from the ledger key by key."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.seen: dict[str, dict[str, str]] = {}

    def __getitem__(self, key: str) -> dict[str, str]:
        if key not in self.seen:
            self.seen[key] = self.ledger.deps_of(key)
        return self.seen[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.seen)  # only what was read: the ledger is never listed whole here

    def __len__(self) -> int:
        return len(self.seen)
