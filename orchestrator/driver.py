"""Launch and resume: plan, lock, materialise, reconcile, run, record.

The driver owns the ledger and the results table while a backend runs the stages.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from orchestrator.backends import BACKENDS, StageToRun, backend_class, by_backend, get_backend
from orchestrator.backends.cancel_request import clear_cancel
from orchestrator.backends.failure_classes import failure_class
from orchestrator.commands.repair import _without_none, keep_sweep_record, remove_leftover_temps
from orchestrator.errors import UserError
from orchestrator.state.central_results import remember
from orchestrator.state.ledger import Ledger
from orchestrator.state.reconcile import IngestSession, ingest_results, log_tail, reconcile
from orchestrator.state.tracking_files import tracking_of, write_tracking_files
from orchestrator.state.workspace import (
    WorkspaceLock,
    check_creatable,
    existing_captures,
    materialise,
    rewrite_stage_file,
    stage_file_problem,
)
from workers.stages.artifacts import inspect_done
from workers.stages.paths import DONE_FILE, STAGE_FILE, stage_dir

if TYPE_CHECKING:  # planning (pydantic) loads in `launch` only: resume and cancel read the ledger
    from orchestrator.planning.planner import Plan
    from orchestrator.spec import SweepSpec


@dataclass
class RunSummary:
    """How a launch or resume ended."""

    done: int
    failed: int
    blocked: int
    ran: int
    #: stages handed to a detached backend (SLURM): they run after the command returns.
    submitted: int = 0
    #: attempts that failed for a reason another attempt may survive and were started again.
    retried: int = 0
    #: stages stopped on the user's request (``prunesweep cancel --stage``).
    cancelled: int = 0

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, was blocked or was cancelled."""
        return 0 if not (self.failed or self.blocked or self.cancelled) else 1


class _LedgerEvents:
    """Backend events -> ledger states, results rows and a progress bar."""

    def __init__(self, workspace: Path, ledger: Ledger, backend: str, total: int, progress: bool):
        from tqdm import tqdm

        self.workspace, self.ledger, self.backend = workspace, ledger, backend
        self.bar = tqdm(total=total, desc="stages", unit="stage", disable=not progress or not total, file=sys.stderr,
                        dynamic_ncols=True)
        self.failures = 0
        self.retries = 0
        self.cancelled_keys: set[str] = set()  # their dependents are blocked with the cause "cancelled"
        self.ingestion = IngestSession(workspace)  # one results connection for the whole run

    def started(self, key, host, pid, job_id=None):
        self.ledger.mark_running(key, host, pid, self.backend, job_id)

    def finished(self, key) -> bool:
        check = inspect_done(stage_dir(self.workspace, key))
        if not check.ok or check.manifest is None:
            self.failed(key, "CorruptArtifact", f"the stage ended but its artifacts do not verify: {check.reason}")
            return False
        # results row first: whoever sees the stage done in the ledger also finds its row
        ingest_results(self.workspace, self.ledger, {key}, self.ingestion, {key: check.manifest})
        self.ledger.mark_done(key)
        self.bar.update(1)
        return True

    def failed(self, key, error_class, message):
        self.failures += 1
        # a full disk may have cut the log short: its own message names the file and the space left
        tail = message if error_class == "DiskFull" else log_tail(self.workspace, key) or message
        self.ledger.mark_failed(key, error_class, tail)
        self.bar.update(1)
        self.bar.set_postfix(failed=self.failures)

    def blocked(self, key, because_of):
        self.ledger.mark_blocked(key, because_of, cancelled=because_of in self.cancelled_keys)
        self.bar.update(1)

    def cancelled(self, key, reason):
        self.cancelled_keys.add(key)
        self.ledger.mark_cancelled(key, reason)
        self.bar.update(1)

    def retrying(self, key, error_class, message):
        self.retries += 1
        row = self.ledger.stages([key])[0]
        last = ((message or "").strip().splitlines() or [""])[-1]
        self.ledger.note_retry(key, f"attempt {row['attempts']} ({row['host'] or '?'} pid {row['pid'] or '?'}): "
                                    f"{error_class} ({failure_class(error_class) or '?'}): {last}")
        self.ledger.mark_planned(key, error_class, f"retrying automatically: {message}")

    def interrupted(self, key):
        self.ledger.mark_planned(key, "Interrupted", "stopped by the user; its last epoch checkpoint is kept")

    def close(self):
        self.bar.close()
        self.ingestion.close()


def _priorities(keys: list[str], ledger: Ledger) -> dict[str, float]:
    """Epochs on the longest path from each stage to the end of the DAG (critical path first)."""
    epochs = {row["key"]: row["epochs"] for row in ledger.stages()}
    children: dict[str, list[str]] = {}
    for key, deps in ledger.deps().items():
        for dep in deps.values():
            children.setdefault(dep, []).append(key)
    memo: dict[str, float] = {}
    for key in reversed(keys):  # keys come in dependency order, so children are seen first
        memo[key] = epochs.get(key, 0) + max((memo.get(c, 0) for c in children.get(key, ())), default=0)
    return memo


def run_pending(workspace: Path, ledger: Ledger, keys: Iterable[str], backend_name: str,
                workers: Optional[int] = None, progress: bool = True,
                backend_settings: Optional[dict] = None, check_stage_files: bool = False,
                sweep_spec: Optional[dict] = None) -> RunSummary:
    """Run (or submit) every stage of ``keys`` that is neither done nor queued/running.

    ``check_stage_files``: first write again from the plan each damaged ``stage.json`` of those
    stages (:func:`restore_stage_files`). ``sweep_spec``: the settings of the sweep this run is for
    (its ``name`` and ``tracking``). The caller holds the workspace lock.
    """
    keys = list(keys)
    done = reconcile(workspace, ledger, lock_held_by_us=True)
    remove_leftover_temps(workspace, ledger)  # of writers killed before their rename
    ingest_results(workspace, ledger, done)
    rows = {row["key"]: row for row in ledger.stages()}
    todo = [key for key in keys if rows[key]["state"] not in ("done", "running")]
    if check_stage_files:
        restore_stage_files(workspace, ledger, todo)
    for key in todo:  # a stage cancelled before runs again now: its request is answered
        clear_cancel(stage_dir(workspace, key))
    _cancel_stale_jobs([rows[key] for key in todo])
    deps = ledger.deps()
    priority = _priorities(keys, ledger)
    tasks = []
    for key in todo:
        pending = [dep for dep in deps.get(key, {}).values() if dep not in done]
        elsewhere = tuple(rows[dep]["job_id"] for dep in pending
                          if rows[dep]["state"] == "running" and rows[dep]["job_id"])
        tasks.append(StageToRun(key, stage_dir(workspace, key), tuple(pending), priority.get(key, 0.0),
                          kind=rows[key]["kind"], after_jobs=elsewhere))
    ledger.mark_planned_many(todo)  # one transaction, not one commit per stage (50k at a first launch)
    spec = sweep_spec or {}
    write_tracking_files(workspace, ledger, todo, spec.get("name"), tracking_of(spec))
    backend = get_backend(backend_name, workers=workers, settings=backend_settings, workspace=workspace)
    events = _LedgerEvents(workspace, ledger, backend.name, 0 if backend.detached else len(tasks), progress)
    try:
        backend.run(tasks, events)
    finally:
        events.close()
    states = {row["key"]: row["state"] for row in ledger.stages(keys)}
    return RunSummary(
        done=sum(state == "done" for state in states.values()),
        failed=sum(state == "failed" for state in states.values()),
        blocked=sum(state == "blocked" for state in states.values()),
        ran=len(tasks),
        submitted=len(tasks) if backend.detached else 0,
        retried=events.retries,
        cancelled=sum(state == "cancelled" for state in states.values()),
    )


def restore_stage_files(workspace: Path, ledger: Ledger, keys: Iterable[str]) -> list[str]:
    """Write again, from the plans of the workspace's sweeps, each ``stage.json`` of ``keys`` (stages
    about to run) that is missing or damaged (:func:`~.state.workspace.stage_file_problem`); the keys
    rewritten.

    Only a stage without a ``DONE.json`` is rewritten (it has not run, so nothing it computed is
    judged by the description replaced); else, or when no sweep plans the stage, UserError names
    the file and ``prunesweep repair``. The caller holds the workspace lock.
    """
    damaged = {key: problem for key in keys if (problem := stage_file_problem(stage_dir(workspace, key)))}
    if not damaged:
        return []

    def refused(key: str, why: str) -> UserError:
        return UserError(f"{stage_dir(workspace, key) / STAGE_FILE}: {damaged[key].partition(' ')[2]}{why}; run "
                         f"`prunesweep repair {workspace}` to move it aside and write it again from the sweep")

    for key in damaged:
        folder = stage_dir(workspace, key)
        if os.path.lexists(folder / DONE_FILE):
            raise refused(key, f" and the stage has a {DONE_FILE}")
        stage_file = folder / STAGE_FILE
        if os.path.lexists(folder) and (os.path.islink(folder) or not os.path.isdir(folder)
                                        or (os.path.isdir(stage_file) and not os.path.islink(stage_file))):
            raise refused(key, "")  # no file of ours replaces a folder, nor is written through a link
    planned = _planned_stages(workspace, ledger, set(damaged))
    for key in damaged:
        if key not in planned:
            raise refused(key, " and no sweep of this workspace plans the stage")
        rewrite_stage_file(workspace, planned[key])
    return list(damaged)


def _planned_stages(workspace: Path, ledger: Ledger, damaged: set[str]) -> dict:
    """Key -> planned stage of every sweep the ledger records, planned again (the earliest sweep's
    stage where several share one: it made the folder)."""
    from orchestrator.planning.planner import plan_sweep
    from orchestrator.spec.loading import validate_spec

    captures = existing_captures(workspace)
    planned: dict = {}
    for row in ledger.sweeps():
        try:
            spec = validate_spec(_without_none(json.loads(row["spec"])), row["source"])
        except (UserError, ValueError, TypeError):  # a sweep this prunesweep cannot plan plans nothing here
            continue
        plan = plan_sweep(spec, lambda key: None if key in damaged else captures(key))
        for key, stage in plan.stages.items():
            planned.setdefault(key, stage)
    return planned


def _cancel_stale_jobs(rows) -> None:
    """Withdraw the scheduler jobs of blocked stages about to be resubmitted (their dependency
    failed, so a scheduler could keep them pending forever)."""
    for name, blocked in by_backend(row for row in rows if row["state"] == "blocked").items():
        backend_class(name).cancel_jobs(blocked)


def launch(spec: SweepSpec, source: str, backend_name: Optional[str] = None, workers: Optional[int] = None,
           progress: bool = True) -> tuple[Plan, RunSummary]:
    """Plan ``spec`` into its workspace and run what is not done yet."""
    from orchestrator.planning.planner import plan_sweep, settings_fingerprint

    workspace = Path(spec.workspace)
    check_creatable(workspace, source)
    remember(spec.results_db)  # the ledger keeps its target only: this run's pushes need its password
    workspace.mkdir(parents=True, exist_ok=True)
    with WorkspaceLock(workspace):
        ledger = Ledger(workspace)
        try:
            settings = settings_fingerprint(spec)
            previous = ledger.sweep_settings(spec.name)
            if previous is not None and previous != settings:
                raise UserError(
                    f"{source}: name: a sweep named {spec.name!r} was launched in {workspace} with other settings "
                    "(dataset, arch, recipes, pruning, label_subset or transfer, or a default of theirs that changed "
                    "meaning); only grid axes (fractions, rewind, mask_source, init, seeds) may change under one "
                    "name: give this sweep a new name"
                )
            plan = plan_sweep(spec, existing_captures(workspace))
            materialise(workspace, list(plan.stages.values()))
            ledger.register(spec.name, source, settings, spec.model_dump(), plan.stages.values(), plan.cells)
            keep_sweep_record(workspace, spec.name, source, settings, spec.model_dump())
            backend_name = backend_name or spec.backend
            section = getattr(spec, backend_name, None)  # a backend registered after the schema was built has none
            settings_for_run = backend_class(backend_name).planned_settings(
                spec, plan, section.model_dump() if section is not None else {})
            summary = run_pending(workspace, ledger, plan.stages.keys(), backend_name, workers, progress,
                                  settings_for_run, sweep_spec=spec.model_dump())
        finally:
            ledger.close()
    return plan, summary


def resume(workspace: Path, backend_name: str = "local", workers: Optional[int] = None, progress: bool = True,
           dry_run: bool = False, backend_settings: Optional[dict] = None) -> tuple[list[str], Optional[RunSummary]]:
    """Rerun every failed, blocked, interrupted or missing stage of the workspace; never a done one.

    The backend's settings are the latest sweep's section for it, unless ``backend_settings`` is given; so
    is its tracking (``tracking:``).
    """
    with WorkspaceLock(workspace):
        ledger = Ledger(workspace)
        try:
            keys = [row["key"] for row in ledger.stages()]
            if dry_run:
                reconcile(workspace, ledger, lock_held_by_us=True)
                return [row["key"] for row in ledger.stages() if row["state"] not in ("done", "running")], None
            sweeps = ledger.sweeps()
            latest = json.loads(sweeps[-1]["spec"]) if sweeps else {}
            settings = backend_settings
            if settings is None:
                settings = latest.get(backend_name) or {}
            summary = run_pending(workspace, ledger, keys, backend_name, workers, progress, settings,
                                  check_stage_files=True, sweep_spec=latest)
            return keys, summary
        finally:
            ledger.close()


def cancel(workspace: Path) -> list[str]:
    """Ask every backend to stop what it runs for the workspace (scheduler jobs, driver jobs);
    the stages it stopped become planned again. Returns the job ids stopped."""
    ledger = Ledger(workspace)
    try:
        def running(name: str) -> list:
            return [row for row in ledger.stages() if row["state"] == "running" and row["backend"] == name]

        stopped: list[str] = []
        for name in BACKENDS:
            jobs, stages = backend_class(name).cancel(workspace, functools.partial(running, name))
            for key, message in stages.items():
                ledger.mark_planned(key, "Cancelled", message)
            stopped += jobs
        return stopped
    finally:
        ledger.close()
