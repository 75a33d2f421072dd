"""Ray: each stage a Ray core task with its kind's resources, in dependency order.

Two ways to run:

- **attached** (no ``address``, or inside the driver job): this process is the driver. It
  connects to Ray (or starts one for the sweep and stops it after), checks that every
  node sees the workspace, then submits each stage as soon as the stages it waits for are
  done, longest chain first, and reports through :class:`~.base.Events`. A task whose
  worker process dies (SIGKILL, node loss: an infrastructure failure,
  :mod:`orchestrator.backends.failure_classes`) is rerun by Ray up to ``retries`` times (Ray's own
  ``max_retries`` where the sweep gives it); the runner resumes from the stage's last epoch
  checkpoint, and each rerun is noted in the ledger. A stage that raises is not retried: it
  fails with its traceback's last lines and its dependents are blocked. A stage the run
  waits for that a process not of this run holds (its lock) is waited for, never started
  beside it.
- **detached** (an ``address``): ``run`` submits a driver to the cluster as a Ray job
  (``python -m orchestrator.driver_job WORKSPACE``), waits only until that driver has seen
  the workspace from every node, records the job in ``WORKSPACE/ray/driver.json`` and
  returns: a dropped SSH session loses nothing.

The backend knows nothing of pruning: a task calls the runner (``module:function``) on a
stage folder. Ray core tasks rather than Tune: a sweep is a DAG of stages with
dependencies, which tasks express directly; Tune's trials are independent.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from orchestrator.backends.base import DEFAULT_RUNNER, Backend, DependencyQueue, Events, StageToRun
from orchestrator.backends.cancel_request import cancel_reason
from orchestrator.backends.failure_classes import DEFAULT_RETRIES
from orchestrator.backends.processes import resolve_runner, thread_env
from orchestrator.backends.ray.job_client import (
    DRIVER_RECORD,
    driver_status,
    job_client,
    one_line,
    read_driver_record,
    stop_driver,
    write_driver_record,
)
from orchestrator.backends.ray.ranks import StageRankError, check_cluster_fits, log_line, run_ranks
from orchestrator.errors import UserError
from workers.stages.artifacts import atomic_write_json
from workers.stages.lock import StageBusy
from workers.stages.workspace_files import read_bytes

#: lines of a traceback kept with a failure.
TRACEBACK_LINES = 12
#: seconds a node has to answer the workspace probe.
PROBE_TIMEOUT_S = 60
#: Ray errors that mean the worker process (or its node) died, as opposed to the stage raising.
_DEATHS = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError", "ObjectLostError")


# ---- what runs on a Ray worker ---------------------------------------------------------

def _stage_task(runner: str, folder: str, key: str, threads: int, reporter) -> None:
    """Body of one stage task: say where it runs, then call the runner on the folder."""
    import ray

    os.environ.update(thread_env(threads))
    # wait for the reporter so that "started" always reaches the driver before "finished"
    ray.get(reporter.started.remote(key, socket.gethostname(), os.getpid()))
    # where it ran and on which GPUs (Ray sets CUDA_VISIBLE_DEVICES; fractions share one)
    log_line(folder, f"ray: task on {socket.gethostname()} pid {os.getpid()} started at {time.time():.3f}, "
                     f"GPU ids {[str(gpu) for gpu in ray.get_gpu_ids()]}, "
                     f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    resolve_runner(runner)(Path(folder))
    log_line(folder, f"ray: task pid {os.getpid()} returned at {time.time():.3f}")


def _read_token(path: str) -> tuple[str, str]:
    """Body of the workspace probe: this node's host name and the token file's content (or why not)."""
    try:
        return socket.gethostname(), read_bytes(path, limit=1 << 12).decode(errors="replace")
    except OSError as error:
        return socket.gethostname(), f"cannot read it: {error.strerror or error}"


class _Reporter:
    """A tiny actor collecting (key, host, pid) of every task attempt that starts."""

    def __init__(self):
        self.pending: list[tuple[str, str, int]] = []

    def started(self, key: str, host: str, pid: int) -> None:
        self.pending.append((key, host, pid))

    def drain(self) -> list[tuple[str, str, int]]:
        pending, self.pending = self.pending, []
        return pending


def cancel_requested(in_flight: dict, running: set[str], queue: DependencyQueue) -> None:
    """Cancel (force: its worker process ends) the task of each started stage the user asked to
    cancel (:mod:`orchestrator.backends.cancel_request`); Ray retries no cancelled task."""
    import ray

    for ref, key in list(in_flight.items()):
        if key in running and cancel_reason(queue.tasks[key].folder) is not None:
            ray.cancel(ref, force=True)
            running.discard(key)  # asked once; its end is reported as any task's


# ---- checks -------------------------------------------------------------------------------

def probe_workspace(workspace: Path, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise UserError unless a task on every alive Ray node reads a token written here.

    The caller is connected to Ray. Each node gets one zero-CPU task pinned to it, so a
    busy cluster still answers; a node that does not answer within ``timeout`` counts as
    not seeing the workspace (no hang).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    path = Path(workspace).absolute() / "ray" / f"probe-{token}"
    atomic_write_json(path, token)
    expected = json.dumps(token, indent=2, sort_keys=True) + "\n"
    probe = ray.remote(_read_token)
    try:
        nodes = {node["NodeID"]: node.get("NodeManagerAddress", "?") for node in ray.nodes() if node["Alive"]}
        refs = {probe.options(num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id, soft=False)).remote(str(path)): node_id for node_id in nodes}
        done, pending = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        problems = []
        for ref in done:
            try:
                host, content = ray.get(ref)
            except Exception as error:  # noqa: BLE001 - any failure of the probe is the answer
                host, content = "?", f"the probe failed: {one_line(error)}"
            if content != expected:
                seen = content if content.startswith("cannot") else "reads another file"
                problems.append(f"node {nodes[refs[ref]]} ({host}): {seen}")
        for ref in pending:
            ray.cancel(ref, force=True)
            problems.append(f"node {nodes[refs[ref]]}: no answer within {timeout:g} s")
    finally:
        path.unlink(missing_ok=True)
    if problems:
        raise UserError(f"backend ray: the workspace {path.parent.parent} must be on storage every Ray node shares "
                        f"(same path); not seen from {len(problems)} of {len(nodes)} node(s): " + "; ".join(problems))


# ---- the backend ----------------------------------------------------------------------------

class RayBackend(Backend):
    """Runs tasks as Ray tasks (attached) or submits a driver job that does (detached)."""

    name = "ray"

    def __init__(self, settings: Mapping[str, Any], workspace: Path, runner: str = DEFAULT_RUNNER):
        self.settings = dict(settings)
        self.workspace = Path(workspace).absolute()
        self.runner = runner
        self.detached = bool(self.settings.get("address")) and not self.settings.get("attached")
        given = self.settings.get("max_retries")
        #: reruns of a stage whose worker died (Ray's max_retries of each stage task).
        self.retries = int(given if given is not None else self.settings.get("retries", DEFAULT_RETRIES))

    @classmethod
    def create(cls, settings, workspace, runner: str = DEFAULT_RUNNER, workers: Optional[int] = None) -> RayBackend:
        """The Ray backend of ``workspace`` (``ray.address`` decides attached or detached)."""
        return cls(settings, Path(workspace or "."), runner=runner)

    # stages of a Ray run live while their driver does: Backend.judge_running's default

    @classmethod
    def cancel_stage(cls, workspace: Path, row, running) -> str:
        """The driver (attached, or the driver job) cancels the stage's task on seeing its request."""
        return f"the Ray driver cancels task stage-{row['key']}"

    @classmethod
    def cancel(cls, workspace: Path, running) -> tuple[list[str], dict[str, str]]:
        """Stop the workspace's driver job; its stage tasks die with it."""
        job = stop_driver(workspace)
        if not job:
            return [], {}
        return [job], {row["key"]: f"Ray job {job} stopped by `prunesweep cancel`" for row in running()}

    @classmethod
    def status_lines(cls, workspace: Path) -> list[str]:
        """The driver job's line, when a detached launch submitted one."""
        if not (Path(workspace) / DRIVER_RECORD).exists():
            return []
        driver = driver_status(workspace)
        if not driver:
            return []
        record, job_status = driver
        return [f"Ray driver job {record['submission_id']} at {record['address']}: {job_status}"]

    @classmethod
    def blocking_settings(cls, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Attached to the cluster of ``address`` (this process must run on one of its nodes), else as they are."""
        return dict(settings, attached=True) if settings.get("address") else dict(settings)

    def run(self, tasks: list[StageToRun], events: Events) -> None:
        """Detached: submit the driver job and return. Attached: run every task, blocking."""
        if not tasks:
            return
        if self.detached:
            self._submit_driver()
        else:
            self._run_attached(tasks, events)

    # -- detached ------------------------------------------------------------------------
    def _runtime_env(self) -> dict:
        env = self.settings.get("runtime_env") or {}
        return {name: value for name, value in env.items() if value}

    def _submit_driver(self) -> None:
        address = self.settings["address"]
        client = job_client(address)
        entrypoint = (f"{shlex.quote(sys.executable)} -m orchestrator.driver_job "
                      f"{shlex.quote(str(self.workspace))}")
        try:
            job = client.submit_job(entrypoint=entrypoint, runtime_env=self._runtime_env() or None,
                                    metadata={"prunesweep_workspace": str(self.workspace)})
        except Exception as error:  # noqa: BLE001
            raise UserError(f"ray.address: {address} refused the driver job: {one_line(error)}") from None
        write_driver_record(self.workspace, address=address, submission_id=job, state="submitted",
                            submitted_at=time.time(), entrypoint=entrypoint, message=None, host=None, pid=None)
        self._wait_attached(client, job)

    def _wait_attached(self, client, job: str) -> None:
        """Return once the driver job saw the workspace from every node; UserError if it cannot."""
        deadline = time.monotonic() + float(self.settings.get("attach_timeout_s", 300))
        while True:
            record = read_driver_record(self.workspace) or {}
            if record.get("submission_id") == job and record.get("state") == "attached":
                return
            if record.get("submission_id") == job and record.get("state") == "failed":
                raise UserError(record.get("message") or f"the Ray driver job {job} failed")
            status = client.get_job_status(job)
            if status.is_terminal():
                logs = client.get_job_logs(job).strip().splitlines()
                raise UserError(f"the Ray driver job {job} ended {status} before it started the sweep: "
                                + (logs[-1] if logs else "no output"))
            if time.monotonic() > deadline:
                client.stop_job(job)
                raise UserError(f"the Ray driver job {job} did not start within attach_timeout_s="
                                f"{self.settings.get('attach_timeout_s', 300)} s (status {status}); it was stopped")
            time.sleep(0.5)

    # -- attached ------------------------------------------------------------------------
    def connect(self) -> bool:
        """Connect to Ray (or start one for the sweep); return whether this call started it."""
        import ray

        if ray.is_initialized():
            return False
        if self.settings.get("address") and self.settings.get("attached"):
            ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
            return True
        # "local": a new Ray of our own, even where `ray start` left a cluster on this machine
        ray.init(address="local", num_cpus=self.settings.get("num_cpus") or len(os.sched_getaffinity(0)),
                 include_dashboard=False,
                 runtime_env=self._runtime_env() or None, logging_level="ERROR", log_to_driver=False)
        return True

    def _options(self, kind: str) -> dict:
        resources = self.settings.get("resources") or {}
        chosen = resources.get(kind) or resources.get("default") or {}
        options: dict[str, Any] = {"num_cpus": chosen.get("num_cpus", 1), "num_gpus": chosen.get("num_gpus", 0),
                                   "max_retries": self.retries, "retry_exceptions": False}
        if chosen.get("custom"):
            options["resources"] = dict(chosen["custom"])
        return options

    def _chosen(self, kind: str) -> dict:
        resources = self.settings.get("resources") or {}
        return dict(resources.get(kind) or resources.get("default") or {})

    def _submit(self, task: StageToRun, reporter, remote, coordinator):
        """One stage: a task with its kind's resources, or, with ranks > 1, a coordinator task
        that runs the ranks in a placement group (it holds no resources itself)."""
        chosen = self._chosen(task.kind)
        ranks = int(chosen.get("ranks", 1))
        if ranks > 1:
            return coordinator.options(name=f"stage-{task.key}", num_cpus=0, max_retries=0).remote(
                self.runner, str(task.folder), task.key, chosen, ranks,
                self.settings.get("placement_strategy", "PACK"), self.retries, reporter)
        options = self._options(task.kind)
        threads = max(1, int(options["num_cpus"]))
        return remote.options(name=f"stage-{task.key}", **options).remote(
            self.runner, str(task.folder), task.key, threads, reporter)

    def _run_attached(self, tasks: list[StageToRun], events: Events) -> None:
        import ray

        started_ray = self.connect()
        try:
            if not self.settings.get("attached"):
                probe_workspace(self.workspace)
                check_cluster_fits(self.settings)
            self._schedule(tasks, events)
        finally:
            if started_ray:
                ray.shutdown()

    def _schedule(self, tasks: list[StageToRun], events: Events) -> None:
        import ray

        job_id = self.settings.get("submission_id") or ray.get_runtime_context().get_job_id()
        queue = DependencyQueue(tasks)
        reporter = ray.remote(_Reporter).options(num_cpus=0).remote()
        remote = ray.remote(_stage_task)
        coordinator = ray.remote(run_ranks)
        in_flight: dict[Any, str] = {}
        running: set[str] = set()

        attempted: set[str] = set()

        def report_starts() -> None:
            for key, host, pid in ray.get(reporter.drain.remote()):
                if key in attempted:  # Ray reran it: only a worker or node that died makes it do that
                    events.retrying(key, "WorkerDied", "Ray reran the stage: the process or node running it died")
                attempted.add(key)
                running.add(key)
                events.started(key, host, pid, job_id)

        def fail(key: str) -> None:
            for child in queue.failed(key):
                events.blocked(child, key)

        try:
            while queue.unresolved or queue.held:
                queue.release_free()
                while queue.has_ready():  # Ray queues what the cluster cannot place yet, in submission order
                    task = queue.pop()
                    if task is None:
                        break
                    in_flight[self._submit(task, reporter, remote, coordinator)] = task.key
                if not in_flight:
                    if not queue.held:
                        break  # everything left is blocked
                    time.sleep(1.0)  # waiting for a stage a process not of this run holds
                    continue
                finished, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
                report_starts()
                cancel_requested(in_flight, running, queue)
                for ref in finished:
                    key = in_flight.pop(ref)
                    running.discard(key)
                    error = self._outcome(ref)
                    if error is not None and error[0] == StageBusy.__name__:
                        queue.wait_for_holder(key)  # a process not of this run runs it: rerun once it ends
                        continue
                    if error is None and events.finished(key):
                        queue.done(key)
                        continue
                    cancelled = cancel_reason(queue.tasks[key].folder) if error is not None else None
                    if cancelled is not None:  # `prunesweep cancel --stage`: not a failure, not retried
                        events.cancelled(key, cancelled)
                    elif error is not None:
                        events.failed(key, *error)
                    fail(key)
        except KeyboardInterrupt:
            for ref in in_flight:
                ray.cancel(ref, force=True)
            for key in running:
                events.interrupted(key)
            raise
        finally:
            ray.kill(reporter)

    def _outcome(self, ref) -> Optional[tuple[str, str]]:
        """None when the task returned, else (error class, message)."""
        import ray

        try:
            ray.get(ref)
            return None
        except ray.exceptions.RayTaskError as error:  # the stage raised: its own class and traceback
            cause = error.cause if getattr(error, "cause", None) is not None else error
            if isinstance(cause, StageRankError):  # a rank of a distributed stage: its own class and reason
                return cause.kind, cause.message
            lines = str(error).rstrip().splitlines()
            return type(cause).__name__, "\n".join(lines[-TRACEBACK_LINES:])
        except Exception as error:  # noqa: BLE001 - the worker or its node died, retries used up
            kind = type(error).__name__
            reason = "the worker process died" if kind in _DEATHS else "Ray could not run the task"
            return kind, f"{reason}; Ray retried it {self.retries} time(s) (retries): {one_line(error)}"



#: the class the backend registry builds.
BACKEND = RayBackend
