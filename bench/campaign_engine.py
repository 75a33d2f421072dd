"""The event loop of the campaign model: jobs, arrays, their dependencies, attempts and humans.

``bench/campaign_model.py`` states what is modelled; this module runs it. Jobs are grouped into
arrays by ``orchestrator.backends.slurm.submission.plan_arrays``, the SLURM backend's own code.
"""
from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from pathlib import Path
from typing import Optional

from campaign_cluster import Allocation, Cluster, NodeEvents
from campaign_jobs import DELAYED, ENDED, HELD, PENDING, RUNNING, Array, Job, Stage, queued_behind
from campaign_model import (
    BAD_NODE,
    DETERMINISTIC,
    INFRASTRUCTURE,
    NODE_FAILURE,
    FateFunction,
    Model,
    Outcome,
    StageSpec,
    remaining_chain_s,
)

from orchestrator.backends.base import StageToRun
from orchestrator.backends.slurm import submission as slurm_submission


class Simulation(NodeEvents):
    """One run of ``model`` over the DAG ``specs`` (in dependency order)."""

    def __init__(self, specs: list[StageSpec], model: Model, fate: FateFunction):
        self.model, self.fate, self.policy = model, fate, model.policy
        #: how an array waits for the arrays before it: the backend's own (afterany), or afterok
        self.dependency = "afterok" if model.policy == "afterok" else slurm_submission.DEPENDENCY
        #: shipped: each job waits for the jobs of the plan's ``waits``; the other policies: whole arrays
        self.per_job = model.policy == "shipped"
        #: the backend's jobs: the input check, in-job retries, resume cancelling what is queued behind
        self.backend_jobs = model.policy in ("shipped", "wave_arrays")
        if self.dependency not in ("afterany", "afterok") or (self.per_job and self.dependency != "afterany"):
            raise NotImplementedError(f"the backend's dependency {self.dependency!r} is not modelled")
        self.order = [spec.key for spec in specs]
        self.stages = {spec.key: Stage(spec, spec.gpus or model.gpus_per_stage) for spec in specs}
        position = {key: i for i, key in enumerate(self.order)}
        for spec in specs:
            missing = [d for d in spec.deps if position.get(d, len(specs)) > position[spec.key]]
            if missing:
                raise ValueError(f"stage {spec.key}: dependencies not listed before it: {missing}")
            if self.stages[spec.key].gpus > model.gpus:
                raise ValueError(f"stage {spec.key}: {self.stages[spec.key].gpus} GPUs on a {model.gpus}-GPU cluster")
        self.dependents: dict[str, list[str]] = defaultdict(list)
        for spec in specs:
            for dep in spec.deps:
                self.dependents[dep].append(spec.key)
        self.uniform = len({stage.gpus for stage in self.stages.values()}) <= 1
        #: the driver's priority of each stage (its longest remaining chain), which the plan turns into nice
        self.chain = remaining_chain_s(specs)
        self.rank = self.chain if model.critical_path_first else {}  # a what-if: first the longest chain
        self.cluster = Cluster(model.gpus, model.node_gpus)
        self.jobs: list[Job] = []
        self.arrays: list[Array] = []
        self.queue: list[tuple[tuple, int]] = []  # (priority, job) of pending jobs, in priority order
        self.events: list[tuple] = []
        self.sequence = self.submitted = 0
        self.now = 0.0
        self.human_due = self.human_gave_up = self.launched = False
        self.done_since_resume = 0
        self.out = Outcome(0.0, 0, 0, 0.0, 0.0, 0, 0, defaultdict(int))

    # ---- the event loop -----------------------------------------------------------------
    def run(self) -> Outcome:
        """Simulate until nothing can happen any more; return the outcome."""
        self._submit(self.order)
        if self.model.bad_node_at_s is not None:
            self._at(self.model.bad_node_at_s, "bad_node")
        if self.model.outage_at_s is not None and self.model.outage_s > 0:
            self._at(self.model.outage_at_s, "outage")
        self._at(self.model.launch_s, "launched")  # the first jobs start then (after what happens at time 0)
        while self.events:
            self.now, _, what, index, token, detail = heapq.heappop(self.events)
            if index is None:
                getattr(self, "_" + what)()
            else:
                job = self.jobs[index]
                if job.token == token:
                    getattr(self, "_" + what)(job, detail) if detail else getattr(self, "_" + what)(job)
            self._schedule()
        out = self.out
        out.unfinished = sum(s.state != "done" for s in self.stages.values())
        out.failures = dict(out.failures)
        out.states = {key: stage.state for key, stage in self.stages.items()}
        out.submissions = len(self.jobs) if self.policy == "per_stage" else self.submitted
        kept = sum(s.progress * s.gpus for s in self.stages.values()) / 3600
        out.gpu_hours_wasted = max(0.0, out.gpu_hours - kept)
        return out

    def _at(self, time: float, what: str, job: Optional[Job] = None, detail: str = "") -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, what, None if job is None else job.index,
                                     0 if job is None else job.token, detail))

    def _schedule(self) -> None:
        """Start pending jobs in priority order while GPUs are free (later ones where an earlier does not fit)."""
        i = 0
        while self.launched and i < len(self.queue) and self.cluster.free_gpus() > 0:
            job = self.jobs[self.queue[i][1]]
            array = self.arrays[job.array]
            if self.policy != "per_stage" and array.running >= array.parallelism:
                i += 1
                continue
            allocation = self.cluster.allocate(self.stages[job.key].gpus)
            if allocation is None:
                if self.uniform:
                    break
                i += 1
                continue
            del self.queue[i]
            self._start_job(job, allocation)

    def _launched(self) -> None:
        self.launched = True

    def _make_pending(self, job: Job) -> None:
        job.state = PENDING
        bisect.insort(self.queue, (job.priority, job.index))

    # ---- submission ----------------------------------------------------------------------------
    def _submit(self, keys: list[str]) -> None:
        """Submit ``keys`` (in dependency order) as the backend's ``plan_arrays`` groups them: a launch or a resume."""
        inside = set(keys)
        tasks = []
        for key in keys:
            stage = self.stages[key]
            pending = tuple(d for d in stage.spec.deps if self.stages[d].state != "done")
            elsewhere = tuple(f"{self.jobs[self.stages[d].job].array}_{self.stages[d].job}" for d in pending
                              if d not in inside and self._alive(self.stages[d]))  # "array_job", as SLURM's ids
            priority = self.chain[key] if self.per_job else 0.0  # the baselines: the planner's order
            tasks.append(StageToRun(key, Path(key), pending, priority, kind=stage.spec.kind, after_jobs=elsewhere))
        first, first_job = len(self.arrays), len(self.jobs)
        for submission in slurm_submission.plan_arrays(tasks, self.model.slurm, self.model.max_array_size):
            if any(len(pack) != 1 for pack in submission.packs):
                raise NotImplementedError("slurm.stages_per_job: the model runs one stage per job")
            retries = {"per_stage": self.model.retries, "afterok": 0}.get(self.policy, submission.retries)
            if submission.distributed and self.model.retry_distributed and self.backend_jobs:
                retries = slurm_submission.in_job_retries({**self.model.slurm, "ranks": {}}, submission.kind)
            index = len(self.arrays)
            array = Array(sorted({first + i for i in submission.after} | {int(j) for j in submission.after_jobs}),
                           submission.parallelism, retries)
            self.arrays.append(array)
            self.submitted += 1
            for dep in array.after:
                self.arrays[dep].dependents.append(index)
            for position, (task,) in enumerate(submission.packs):
                first_key = submission.nice[position] if self.per_job else -self.rank.get(task.key, 0.0)
                job = Job(len(self.jobs), task.key, index, (first_key, self.submitted, position))
                self.jobs.append(job)
                array.jobs.append(job.index)
                stage = self.stages[task.key]
                stage.job, stage.state = job.index, "waiting"
                if self.per_job:  # afterany on the jobs of its own inputs (``scontrol update``, task_updates.py)
                    job.after = [self.arrays[first + i].jobs[j] for i, j in submission.waits[position]] + [
                        int(job_id.split("_")[1]) for job_id in submission.waits_outside[position]]
        if self.policy == "per_stage":
            for key in keys:  # in dependency order: a stage behind a failure is blocked at once
                stage = self.stages[key]
                states = [self.stages[d].state for d in stage.spec.deps]
                stage.waiting_on = sum(not self.stages[d].released for d in stage.spec.deps)
                if any(state in ("failed", "blocked") for state in states):
                    self._withdraw(self.jobs[stage.job], "blocked")
                elif stage.waiting_on == 0:
                    self._make_pending(self.jobs[stage.job])
            return
        if self.per_job:
            for job in self.jobs[first_job:]:
                job.waiting = sum(self.jobs[j].state != ENDED for j in job.after)
                for j in job.after:
                    self.jobs[j].dependents.append(job.index)
                if job.waiting == 0:
                    self._make_pending(job)
            return
        for index in range(first, len(self.arrays)):
            self._try_release(index)

    def _alive(self, stage: Stage) -> bool:
        return stage.job is not None and self.jobs[stage.job].state != ENDED

    def _try_release(self, index: int) -> None:
        """Release an array's jobs once its dependency is satisfied (afterany: every array before it ended)."""
        array = self.arrays[index]
        if array.released or array.dead or self.per_job:  # per job: released by ``_ended``
            return
        if self.dependency == "afterok":
            if any(self.arrays[d].dead for d in array.after):
                self._kill_array(index)
                return
            if not all(self.arrays[d].complete() and not self.arrays[d].failed for d in array.after):
                return
        elif not all(self.arrays[d].complete() for d in array.after):
            return
        array.released = True
        for j in array.jobs:
            if self.jobs[j].state == HELD:
                self._make_pending(self.jobs[j])

    # ---- a job's life ------------------------------------------------------------------------------
    def _start_job(self, job: Job, allocation: Allocation) -> None:
        job.state, job.allocation, job.started = RUNNING, allocation, self.now
        self.arrays[job.array].running += 1
        stage = self.stages[job.key]
        if self.backend_jobs and any(self.stages[d].state != "done" for d in stage.spec.deps):
            stage.state = "blocked"  # the job's input check (orchestrator/backends/slurm/inputs.py)
            self._at(self.now + self.model.check_s + self.model.job_end_s, "end_job", job)
            return
        self._begin_attempt(job, self.model.job_start_s)

    def _begin_attempt(self, job: Job, overhead: float) -> None:
        stage = self.stages[job.key]
        spec = stage.spec
        fate = self.fate(spec, stage.attempts)
        if stage.attempts:
            overhead += self.model.restart_s
        stage.attempts += 1
        stage.state, stage.began, stage.overhead = "running", self.now, overhead
        remaining = spec.duration_s - stage.progress
        ends = [(overhead + remaining, "finish")]
        if fate.infra_after_s is not None and fate.infra_after_s < remaining:
            ends.append((overhead + fate.infra_after_s, INFRASTRUCTURE))
        if fate.node_after_s is not None and fate.node_after_s < remaining:
            ends.append((overhead + fate.node_after_s, NODE_FAILURE))
        if fate.broken_at is not None and fate.broken_at * spec.duration_s >= stage.progress:
            ends.append((overhead + fate.broken_at * spec.duration_s - stage.progress, DETERMINISTIC))
        if fate.preempt_after_s is not None and fate.preempt_after_s < overhead + remaining:
            ends.append((fate.preempt_after_s, "preempt"))
        if self.cluster.is_bad(job.allocation or []) and self.model.bad_node_fail_s < remaining:
            ends.append((overhead + self.model.bad_node_fail_s, BAD_NODE))
        after, what = min(ends, key=lambda end: (end[0], end[1] != "finish"))
        self._at(self.now + after, "attempt_ended", job, what)

    def _reached(self, stage: Stage) -> float:
        return stage.progress + max(0.0, self.now - stage.began - stage.overhead)

    def _checkpoint(self, stage: Stage) -> float:
        """The work kept when an attempt dies now: up to the last epoch checkpoint."""
        spec = stage.spec
        if not spec.epochs:
            return stage.progress
        epoch = spec.duration_s / spec.epochs
        return max(stage.progress, int(self._reached(stage) / epoch + 1e-9) * epoch)

    def _attempt_ended(self, job: Job, what: str) -> None:
        stage, model = self.stages[job.key], self.model
        if what == "finish":
            stage.progress, stage.state = stage.spec.duration_s, "done"
            self.out.done += 1
            self.done_since_resume += 1
            self.out.makespan_s = max(self.out.makespan_s, self.now)
            self.out.finished_at[job.key] = self.now
            self._at(self.now + model.job_end_s, "end_job", job)
            return
        if what == "preempt":  # the signal saves a mid-epoch checkpoint; submitit requeues without limit
            stage.progress = self._reached(stage)
            self.out.preemptions += 1
            self._requeue(job, model.requeue_delay_s)
            return
        stage.progress = self._checkpoint(stage)
        self.out.failures[what] += 1
        if what == DETERMINISTIC:
            self._fail(job, DETERMINISTIC)
        elif what == NODE_FAILURE and self.policy != "per_stage":
            self._node_failed(job)
        else:
            self._process_died(job)

    def _process_died(self, job: Job) -> None:
        """An infrastructure failure: retried (in the job, by a requeue or by a fresh submission) or failed."""
        stage, model = self.stages[job.key], self.model
        if stage.retries_used >= self.arrays[job.array].retries:
            self._fail(job, INFRASTRUCTURE)
            return
        stage.retries_used += 1
        self.out.automatic_retries += 1
        self.out.retried.add(job.key)
        if self.backend_jobs and model.retry_mode == "in_job":
            self._begin_attempt(job, 0.0)  # same job, same node, no queue
        elif self.backend_jobs and model.retry_mode == "resubmit":
            self.submitted += 1
            job.priority = (-self.rank.get(job.key, 0.0), self.submitted, 0)  # the back of the queue
            self._requeue(job, 0.0)
        else:
            self._requeue(job, model.requeue_delay_s)

    def _node_failed(self, job: Job) -> None:
        """The job went down with its node: SLURM requeues it (``JobRequeue``), or the stage fails ``NodeFailure``."""
        if self.model.node_requeue:
            self.out.node_requeues += 1
            self._requeue(job, self.model.requeue_delay_s)
        else:
            self._fail(job, INFRASTRUCTURE, at_once=True)

    def _requeue(self, job: Job, delay: float) -> None:
        """Give the job's GPUs back; it is pending again after ``delay`` with the priority it has."""
        self._free(job)
        self.stages[job.key].state = "waiting"
        job.token += 1
        job.state = DELAYED
        if delay > 0:
            self._at(self.now + delay, "make_pending", job)  # its BeginTime
        else:
            self._make_pending(job)

    def _free(self, job: Job) -> None:
        if job.allocation is None:
            return
        self.cluster.release(job.allocation)
        self.out.gpu_hours += (self.now - job.started) * self.stages[job.key].gpus / 3600
        self.arrays[job.array].running -= 1
        job.allocation = None

    def _fail(self, job: Job, failure: str, at_once: bool = False) -> None:
        stage = self.stages[job.key]
        stage.state, stage.failure = "failed", failure
        self.arrays[job.array].failed += 1
        self._at(self.now + (0.0 if at_once else self.model.job_end_s), "end_job", job)
        arrays_die = self.dependency == "afterok" and self.policy != "per_stage"
        if arrays_die:
            self._kill_array(job.array)
        elif self.policy == "per_stage":
            self._block_dependents(job.key)
        if failure == INFRASTRUCTURE or arrays_die:
            self._call_human()

    def _end_job(self, job: Job) -> None:
        self._free(job)
        job.token += 1
        job.state = ENDED
        array = self.arrays[job.array]
        array.ended += 1
        stage = self.stages[job.key]
        if stage.state == "done":
            stage.released = True
            if self.policy == "per_stage":
                for key in self.dependents[job.key]:
                    waiter = self.stages[key]
                    if waiter.state == "waiting" and waiter.job is not None and self.jobs[waiter.job].state == HELD:
                        waiter.waiting_on -= 1
                        if waiter.waiting_on == 0:
                            self._make_pending(self.jobs[waiter.job])
        self._ended(job)
        if array.complete():
            for index in array.dependents:
                self._try_release(index)

    def _ended(self, job: Job) -> None:
        """Afterany on this job is satisfied: release the jobs that waited for it alone."""
        if not self.per_job:
            return
        for index in job.dependents:
            waiter = self.jobs[index]
            waiter.waiting -= 1
            if waiter.waiting == 0 and waiter.state == HELD:
                self._make_pending(waiter)

    def _withdraw(self, job: Job, state: str) -> None:
        """A job that will never run (its stage is ``state``); it ends without counting for its array."""
        if job.state == PENDING:
            self.queue.remove((job.priority, job.index))
        job.token += 1
        job.state = ENDED
        self.stages[job.key].state = state
        self._ended(job)  # cancelled: SLURM counts afterany satisfied

    # ---- blocking and humans ------------------------------------------------------------------
    def _block_dependents(self, key: str) -> None:
        todo = list(self.dependents[key])
        while todo:
            waiter = self.stages[todo.pop()]
            if waiter.state == "waiting" and waiter.job is not None and self.jobs[waiter.job].state == HELD:
                self._withdraw(self.jobs[waiter.job], "blocked")
                todo.extend(self.dependents[waiter.spec.key])

    def _kill_array(self, index: int) -> None:
        """An afterok array that can never complete: so can no array that waits on it (DependencyNeverSatisfied)."""
        todo = [index]
        while todo:
            array = self.arrays[todo.pop()]
            if array.dead or (array.complete() and not array.failed):
                continue
            array.dead = True
            todo.extend(array.dependents)
            for j in array.jobs:
                if self.jobs[j].state == HELD:
                    self._withdraw(self.jobs[j], "blocked")
                    self._call_human()  # status shows it blocked: someone has to resume

    def _call_human(self) -> None:
        if not self.human_due and not self.human_gave_up:
            self.human_due = True
            self._at(self.now + self.model.human_delay_s, "human")

    def _human(self) -> None:
        """``prunesweep resume``: rerun every failed and blocked stage."""
        self.human_due = False
        failed = [s.failure for s in self.stages.values() if s.state == "failed"]
        futile = self.out.human_interventions and self.done_since_resume == 0 and DETERMINISTIC in failed \
            and INFRASTRUCTURE not in failed
        if futile or self.out.human_interventions >= self.model.max_resumes:
            self.human_gave_up = True
            return
        again = {k for k in self.order if self.stages[k].state in ("failed", "blocked")}
        if self.backend_jobs:  # status shows a stage queued behind a failed or blocked one blocked
            queued = queued_behind(again, self.order, self.stages, self.jobs)
            again |= {job.key for job in queued}
            for job in queued:  # withdrawn first, so that no array they end releases one of them
                self._withdraw(job, "blocked")
            for job in queued:
                array = self.arrays[job.array]
                array.ended += 1
                if array.complete():
                    for index in array.dependents:
                        self._try_release(index)
        if not again:
            return
        self.out.human_interventions += 1
        self.done_since_resume = 0
        for key in again:
            stage = self.stages[key]
            stage.state, stage.failure, stage.retries_used = "waiting", None, 0
        self._submit([k for k in self.order if k in again])
