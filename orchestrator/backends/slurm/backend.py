"""SLURM through submitit: the DAG submitted as job arrays, each job waiting ``afterany`` for its own inputs.

``run`` submits the arrays of :func:`.submission.plan_arrays` and returns: stages of one
kind and one wave (their depth in the DAG) form one array (chunked to the cluster's
``MaxArraySize``), submitted waiting with ``--dependency=afterany:`` for the arrays holding
its stages' dependencies; :mod:`.task_updates` then narrows each job to the array tasks its
own stages wait for and sets its nice (critical path first), so no driver process has to
stay alive and a stage starts as soon as its inputs ended. A failure
holds back only its own dependents: each job first checks that its stage's inputs exist
and ends at once as *blocked* when one does not (:mod:`.inputs`); the other stages of the
same arrays run on. Each stage runs as a submitit ``Checkpointable``: on the signal
before preemption or the time limit it is requeued with the same stage folder and
resumes from its epoch checkpoint (all mutable state lives in the stage folder).

The code a job runs is fixed at submission: the runner's package is copied into
``<log folder>/code/<digest>/`` and put first on the job's import path, so editing the
source while jobs are queued changes nothing they run.

Every ``sbatch`` runs under a time limit (a full queue makes sbatch wait forever) and
submissions are spaced by ``submit_interval_s``.

A kind listed in ``ranks`` runs as a distributed stage: its job has ``nodes`` x
``tasks_per_node`` tasks, one rank each, started by ``srun --kill-on-bad-exit`` (a rank
that fails ends the others); :class:`StageJob` gives each the torch environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). Only rank 0 checkpoints and requeues (submitit's rule). A kind listed in
``stages_per_job`` shares the job's GPU(s): that many stages of one array wave run
together in one array task (:mod:`.pack`).

Where a job stands comes from ``squeue``/``scontrol`` first and ``sacct`` only where
accounting answers (see :func:`.job_status.job_states`); answers are cached for a few seconds so a
status loop in many shells does not hammer the controller.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

from orchestrator.backends.base import DEFAULT_RUNNER, Backend, Checks, Events, Retry, StageToRun, Verdict
from orchestrator.backends.processes import rank_env, split_runner, thread_env
from orchestrator.backends.slurm import job_status, submit_limits, task_updates, time_limits
from orchestrator.backends.slurm.attempts import read_record, recorded_keys, summary
from orchestrator.backends.slurm.inputs import inputs_ready
from orchestrator.backends.slurm.job_status import blocked_while_queued, cancel, job_states, judge_job
from orchestrator.backends.slurm.pack import PackJob
from orchestrator.backends.slurm.sbatch_limits import sbatch_time_limit, submission_error
from orchestrator.backends.slurm.scheduler_output import (
    describe,
    parse_max_array_size,
)
from orchestrator.backends.slurm.submission import DEFAULT_ARRAY_PARALLELISM, DEFAULT_MAX_ARRAY_SIZE, plan_arrays
from workers.stages.workspace_files import (
    atomic_write_bytes,
    make_unique_folder,
    move_within,
)


class StageJob:
    """What a SLURM job runs: the worker entry point on one stage folder, requeued on preemption.

    ``code_dir`` (a snapshot made at submission) goes first on the import path before the
    runner is imported. Before a preemption or the time limit, submitit calls
    :meth:`checkpoint`: the runner's module may define ``save_progress()`` to save the
    running stage's state (mid-epoch) into the stage folder first.
    """

    def __init__(self, runner: str = DEFAULT_RUNNER, code_dir: Optional[str] = None):
        self.runner = runner
        self.code_dir = code_dir

    def _runner_module(self):
        if self.code_dir and self.code_dir not in sys.path:
            sys.path.insert(0, self.code_dir)
        return importlib.import_module(split_runner(self.runner)[0])

    def __call__(self, folder: str) -> None:
        if not inputs_ready(folder):  # an input failed: end at once, blocked (see .inputs)
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            return
        distributed_environment(os.environ)
        getattr(self._runner_module(), split_runner(self.runner)[1])(Path(folder))
        # The stage is done. A warning signal now (SLURM's timer is coarse) would requeue a
        # finished job, or, once Python has reset its handlers on exit, kill it by USR2 and
        # fail the stage.
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    def checkpoint(self, folder: str):
        """Save the stage's progress, then requeue the same stage: it resumes from that checkpoint."""
        import submitit

        save_progress = getattr(self._runner_module(), "save_progress", None)
        if save_progress is not None:
            save_progress()
        return submitit.helpers.DelayedSubmission(self, folder)


#: MASTER_PORT is this plus the job id modulo :data:`PORT_SPAN`: the same port after a requeue,
#: different ones for jobs submitted close together.
PORT_BASE, PORT_SPAN = 40000, 20000


def distributed_environment(environ) -> None:
    """Set the torch rank variables in ``environ`` from SLURM's, when the job has more than one task."""
    tasks = int(environ.get("SLURM_NTASKS", "1") or 1)
    if tasks <= 1:
        return
    import submitit

    job = submitit.JobEnvironment()
    nodes = max(1, job.num_nodes)
    environ.update(rank_env(job.global_rank, tasks, job.local_rank, tasks // nodes, job.hostnames[0],
                            PORT_BASE + int(environ["SLURM_JOB_ID"]) % PORT_SPAN))


def snapshot_code(runner: str, into: Path) -> Path:
    """Copy the runner's top-level package (its ``.py`` files) to ``into/<digest>/``; return that folder.

    The digest covers every copied path and content, so an unchanged package reuses one snapshot.
    """
    package = split_runner(runner)[0].split(".")[0]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot snapshot {package!r}: it is not a package")
    source = Path(list(spec.submodule_search_locations)[0])
    files = sorted(path for path in source.rglob("*.py") if "__pycache__" not in path.parts)
    contents = {path.relative_to(source): path.read_bytes() for path in files}
    digest = hashlib.sha256()
    for relative, data in contents.items():
        digest.update(str(relative).encode() + b"\0" + data + b"\0")
    target = Path(into) / digest.hexdigest()[:16]
    if not (target / package).is_dir():
        # a new folder of our own (never one planted there), filled and renamed without following a link
        staging = make_unique_folder(into, f".{target.name}.{os.getpid()}.tmp")
        for relative, data in contents.items():
            atomic_write_bytes(staging / package / relative, data, staging)
        try:
            move_within(staging, target, into)
        except OSError:  # another launch made the same snapshot meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return target


def max_array_size(override: Optional[int] = None) -> int:
    """The cluster's ``MaxArraySize`` (largest task index + 1), unless overridden."""
    if override:
        return override
    try:
        output = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    return parse_max_array_size(output) or DEFAULT_MAX_ARRAY_SIZE


class SlurmBackend(Backend):
    """Submits tasks as chained job arrays and returns without waiting."""

    name = "slurm"
    detached = True

    def __init__(self, settings: Mapping[str, Any], log_folder: Path, runner: str = DEFAULT_RUNNER):
        self.settings = dict(settings)
        self.log_folder = Path(log_folder)
        self.runner = runner

    def _executor(self, kind: str, dependency: Optional[str]):
        import submitit

        settings = self.settings
        ranks = settings.get("ranks", {}).get(kind) or {}
        executor = submitit.SlurmExecutor(folder=self.log_folder / "%j",
                                          max_num_timeout=settings.get("max_requeues", 3))
        parameters = {
            "job_name": f"prunesweep-{kind}",
            "time": settings.get("time_min", {}).get(kind) or self._derived_time_min().get(kind)
            or settings.get("default_time_min", 60),
            "cpus_per_task": settings.get("cpus_per_task", 1),
            "array_parallelism": settings.get("array_parallelism", DEFAULT_ARRAY_PARALLELISM),
            "signal_delay_s": settings.get("signal_delay_s", 90),
            # one math thread per allocated CPU, as the local backend does: same numbers everywhere
            "setup": ["export " + " ".join(f"{name}={value}" for name, value in thread_env(self._cpus()).items()),
                      *settings.get("setup", [])],
            # a flag given as true is written bare (``--hold``); false leaves it out
            "additional_parameters": {"open-mode": "append", **{
                name: value for name, value in settings.get("extra_sbatch", {}).items() if value is not False}},
        }
        for name in ("partition", "account", "qos", "constraint", "gpus_per_node"):
            if settings.get(name) is not None:
                parameters[name] = settings[name]
        if ranks.get("nodes", 1) * ranks.get("tasks_per_node", 1) > 1:
            parameters.update(nodes=ranks.get("nodes", 1), ntasks_per_node=ranks.get("tasks_per_node", 1),
                              srun_args=["--kill-on-bad-exit=1"])
        if settings.get("mem_gb") is not None:
            parameters["mem"] = f"{settings['mem_gb']}GB"
        if dependency:
            parameters["dependency"] = dependency
        executor.update_parameters(**parameters)
        return executor

    def preflight(self) -> None:
        """Refuse (UserError, nothing submitted) unless SLURM answers and knows the partition."""
        from orchestrator.errors import UserError

        try:
            result = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise UserError("backend slurm: `sinfo` is not on PATH: is this a SLURM login node?") from None
        except subprocess.TimeoutExpired:
            raise UserError("backend slurm: `sinfo` did not answer within 60 s") from None
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise UserError(f"backend slurm: SLURM is not reachable (sinfo: {last})")
        partition = self.settings.get("partition")
        known = sorted(set(result.stdout.split()))
        if partition and partition not in known:
            raise UserError(f"slurm.partition: unknown partition {partition!r}; sinfo knows: {', '.join(known)}")

    def run(self, tasks: list[StageToRun], events: Events) -> None:
        """Submit the arrays of :func:`.submission.plan_arrays` (per wave and kind, each job ``afterany`` on its
        own inputs, critical path first); return at once."""
        if not tasks:
            return
        self.preflight()
        plan = plan_arrays(tasks, self.settings, max_array_size(self.settings.get("max_array_size")))
        submit_limits.check(sum(len(array.packs) for array in plan), self.settings.get("account"))
        array_ids: dict[int, str] = {}  # position in the plan -> the array's job id
        job_ids: dict[tuple[int, int], str] = {}  # (position in the plan, job index) -> the job's id
        refused: list[str] = []
        submitted_stages = 0
        code = str(snapshot_code(self.runner, self.log_folder / "code"))
        job = StageJob(self.runner, code)
        interval = float(self.settings.get("submit_interval_s", 0.1))
        last_submission = 0.0
        with sbatch_time_limit(int(self.settings.get("submit_timeout_s", 120)), self.log_folder / "bin"):
            for index, array in enumerate(plan):
                per_job = max(len(pack) for pack in array.packs)
                # a distributed stage runs in the job's own processes; any other as a child process of
                # the job (a pack, of one when not shared), which retries it after an infrastructure failure
                runs = job if array.distributed else PackJob(self.runner, code, max(1, self._cpus() // per_job),
                                                             retries=array.retries)
                executor = self._executor(array.kind, array.dependency(array_ids))
                time.sleep(max(0.0, last_submission + interval - time.monotonic()))
                last_submission = time.monotonic()
                try:
                    with executor.batch():
                        jobs = [executor.submit(runs, *self._arguments(list(pack), runs is job))
                                for pack in array.packs]
                except Exception as error:
                    raise submission_error(error, submitted_stages, len(tasks)) from None
                for job_index, (pack, submitted) in enumerate(zip(array.packs, jobs, strict=True)):
                    array_ids[index] = submitted.job_id.split("_")[0]
                    job_ids[(index, job_index)] = submitted.job_id
                    for task in pack:  # a pack's stages share its job id, each keeps its own row
                        submitted_stages += 1
                        events.started(task.key, host=None, pid=None, job_id=submitted.job_id)
                refused += task_updates.apply(task_updates.updates(array, index, job_ids))
        if refused:  # those jobs wait for whole arrays: later than needed, never too early
            print(f"slurm: {len(refused)} scontrol update(s) refused, e.g. {refused[0]}", file=sys.stderr)

    def _derived_time_min(self) -> dict[str, int]:
        """Kind -> minutes derived at launch (and kept for resume, which has no plan at hand)."""
        derived = self.settings.get("derived_time_min")
        if derived is None:
            return time_limits.load(self.log_folder)
        if time_limits.load(self.log_folder) != derived:  # this launch's limits (none: the defaults) win
            self.log_folder.mkdir(parents=True, exist_ok=True)
            time_limits.save_minutes(self.log_folder, derived)
        return dict(derived)

    def _cpus(self) -> int:
        return int(self.settings.get("cpus_per_task", 1))

    @staticmethod
    def _arguments(pack: list[StageToRun], single: bool) -> tuple:
        folders = [str(task.folder) for task in pack]
        return (folders[0],) if single else (folders,)

    @classmethod
    def create(cls, settings: Mapping[str, Any], workspace: Optional[Path], runner: str = DEFAULT_RUNNER,
               workers: Optional[int] = None) -> SlurmBackend:
        """Submitit's logs and the code snapshots go to ``WORKSPACE/slurm``."""
        return cls(settings, log_folder(Path(workspace or ".")), runner=runner)

    @classmethod
    def judge_running(cls, rows, checks: Checks) -> dict[str, Verdict]:
        """Ask squeue (then sacct) about the jobs; a read-only look (status) may reuse a few seconds old answer."""
        rows = [row for row in rows if row["job_id"]]
        if not rows:
            return {}
        folder = log_folder(checks.workspace)
        states = job_states([row["job_id"] for row in rows], None if checks.fresh else folder / "job_states.json")
        verdicts = {row["key"]: judge_job(row["job_id"], states.get(row["job_id"]), folder,
                                          checks.log_tail(row["key"]), key=row["key"])
                    for row in rows}
        stage_states = getattr(checks, "stage_states", None)
        queued = [row["key"] for row in rows if verdicts[row["key"]].state == "running"
                  and describe(states.get(row["job_id"]) or ())[0] == "queued"]
        if queued and stage_states is not None:
            verdicts.update(blocked_while_queued(checks.workspace, queued, stage_states(), verdicts))
        if stage_states is not None and any(v.error_class == "DependencyFailed" for v in verdicts.values()):
            verdicts.update(job_status.blocked_by_cancelled(verdicts, stage_states()))
        return verdicts

    @classmethod
    def describe_running(cls, workspace: Path, rows) -> dict[str, tuple[str, str]]:
        """``queued`` with SLURM's reason, or ``running`` with node and start, from a few seconds old answer."""
        rows = [row for row in rows if row["job_id"]]
        if not rows:
            return {}
        states = job_states([row["job_id"] for row in rows], log_folder(workspace) / "job_states.json")
        described = {}
        for row in rows:
            if states.get(row["job_id"]):
                phase, detail = describe(states[row["job_id"]])
                failures = read_record(Path(workspace), row["key"], row["job_id"])
                described[row["key"]] = (phase, f"{detail}; {summary(failures)}" if failures else detail)
        return described

    @classmethod
    def planned_settings(cls, spec, plan, settings) -> dict:
        """The section plus ``derived_time_min``: time limits from the throughput table (:mod:`.time_limits`)."""
        limits = time_limits.derive(spec, plan, settings, partition_max=cls._partition_max(settings))
        return {**settings, "derived_time_min": {kind: limit.minutes for kind, limit in limits.items()
                                                 if limit.source == "derived"}}

    @classmethod
    def plan_lines(cls, spec, plan, settings) -> list[str]:
        """The time limit of each kind and where it comes from."""
        return time_limits.describe(time_limits.derive(spec, plan, settings,
                                                       partition_max=cls._partition_max(settings)))

    @staticmethod
    def _partition_max(settings) -> Optional[int]:
        if settings.get("max_time_min") or not settings.get("device"):
            return None  # not needed: the setting caps, or nothing is derived
        return time_limits.partition_max_minutes(settings.get("partition"))

    @classmethod
    def job_retries(cls, workspace: Path, rows) -> dict[str, list[Retry]]:
        """The failed attempts each stage's job started again (:mod:`.attempts`): one record read per
        stage that was running, none for a stage without a job."""
        retries = {}
        recorded = recorded_keys(Path(workspace)) if rows else set()
        for row in rows:
            failures = (read_record(Path(workspace), row["key"], row["job_id"])
                        if row["job_id"] and row["key"] in recorded else None)
            if failures:
                retries[row["key"]] = [Retry(row["job_id"], str(f.get("class")), str(f.get("why")),
                                             str(f.get("host") or ""), str(f.get("at") or ""))
                                       for f in failures if f.get("retried")]
        return retries

    @classmethod
    def cancel_jobs(cls, rows) -> None:
        """``scancel`` the jobs of these stages (blocked ones would stay pending forever)."""
        cancel([row["job_id"] for row in rows if row["job_id"]])

    @classmethod
    def cancel(cls, workspace: Path, running) -> tuple[list[str], dict[str, str]]:
        """``scancel`` the jobs of every queued or running stage."""
        rows = [row for row in running() if row["job_id"]]
        cancel([row["job_id"] for row in rows])
        return ([row["job_id"] for row in rows],
                {row["key"]: f"job {row['job_id']} cancelled by `prunesweep cancel`" for row in rows})

    @classmethod
    def cancel_stage(cls, workspace: Path, row, running) -> str:
        """``scancel`` the stage's own array task, never another's (:func:`.job_status.cancel_stage_job`)."""
        return job_status.cancel_stage_job(workspace, row["key"], row["job_id"], [
            other["key"] for other in running() if other["job_id"] == row["job_id"] and other["key"] != row["key"]])

    @classmethod
    def log_files(cls, workspace: Path, row) -> list[Path]:
        """The stdout/stderr files submitit wrote for the stage's job (rank 0's), where they exist."""
        if not row["job_id"]:
            return []
        folder = log_folder(workspace) / row["job_id"]
        return [path for path in (folder / f"{row['job_id']}_0_log.err", folder / f"{row['job_id']}_0_log.out")
                if path.exists()]


def log_folder(workspace: Path) -> Path:
    """Where the SLURM backend keeps submitit's files, job state cache and code snapshots."""
    return Path(workspace) / "slurm"


#: the class the backend registry builds.
BACKEND = SlurmBackend
