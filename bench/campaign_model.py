"""A discrete-event model of a sweep's DAG running on a GPU cluster, under two submission policies.

Pure Python, no project imports: ``bench/campaign_simulation.py`` feeds it the planner's DAG
and ``tests/unit/test_campaign_simulation.py`` checks it on DAGs small enough to add up by hand.

The cluster has ``gpus`` GPUs; every stage's job asks for the same ``gpus_per_stage`` (the
SLURM backend's ``gpus_per_node`` is one setting for every kind), so ``gpus // gpus_per_stage``
stages run at once. Pending jobs start in priority order (submission order, then wave, kind and
index, as SLURM orders the elements of arrays submitted one after another); a job that is
requeued or retried keeps its place.

Policies:

- ``old`` (the SLURM backend before issue 11): one array per DAG wave and kind, each waiting
  ``afterok`` on the whole arrays that hold its members' dependencies. A stage that fails for
  good (anything but a preemption within ``max_requeues``) kills its array: every array that
  waits on it, and transitively every later one, can never start. A human notices
  ``human_delay_s`` after the first such failure and runs ``resume``, which resubmits every
  failed and blocked stage the same way (new arrays per wave and kind among them, ``afterok`` on
  the new arrays and on the live arrays of dependencies still queued or running). The human
  gives up when the only failures left are deterministic and the previous resume made no progress
  (nothing finished since), or after ``max_resumes``.
- ``new`` (issue 11): each stage waits for its own dependencies only. An infrastructure failure
  is retried automatically up to ``retries`` times; a deterministic failure is not, and blocks
  exactly its transitive dependents. A stage still failing after its retries is left to a human
  ``resume`` (same delay), which reruns infrastructure failures and what they blocked; nothing a
  resume can do helps a deterministic failure, so it schedules none.

Failures (common random numbers: the same seed gives both policies the same draws, attempt by
attempt):

- *infrastructure* (node failure, a worker killed by a signal): each attempt fails with
  probability ``failure_p x (1 - deterministic_share)``, after a running time drawn uniformly
  over the stage's full duration (a shorter, resumed attempt may finish first); the next attempt
  resumes from the last epoch checkpoint, so the work since that checkpoint is lost;
- *deterministic* (an exception in the stage's code, out of memory, bad data): a stage is
  broken with probability ``failure_p x deterministic_share``; it fails at the same point of its
  work on every attempt;
- *preemption*: a Poisson process of ``preemptions_per_hour`` per running job. The job saves a
  mid-epoch checkpoint at the signal and requeues itself (nothing lost but the restart); past
  ``max_requeues`` it fails as an infrastructure failure.

Every attempt after a stage's first pays ``restart_s`` (job start, imports, reading the
checkpoint). GPU-hours wasted are GPU time that did not turn into kept progress: lost work
since a checkpoint, restarts, and the reruns of a deterministic failure. GPUs idle while a
human is awaited are not counted as wasted (the cluster's other users take them).
"""
from __future__ import annotations

import heapq
import random
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Optional

POLICIES = ("old", "new")
INFRASTRUCTURE, DETERMINISTIC = "infrastructure", "deterministic"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the DAG: how long it trains on its GPUs and what it waits for."""

    key: str
    kind: str
    duration_s: float
    deps: tuple[str, ...] = ()
    #: epoch checkpoints: the work is kept in steps of ``duration_s / epochs`` (0: none).
    epochs: int = 0


@dataclass(frozen=True)
class Model:
    """The cluster, the policy and the failure model of one run."""

    gpus: int
    policy: str = "new"
    gpus_per_stage: int = 1
    failure_p: float = 0.0
    deterministic_share: float = 0.0
    preemptions_per_hour: float = 0.0
    max_requeues: int = 3
    retries: int = 2
    human_delay_s: float = 12 * 3600.0
    restart_s: float = 0.0
    max_resumes: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"policy: {self.policy!r}; allowed: {', '.join(POLICIES)}")
        if self.gpus < self.gpus_per_stage:
            raise ValueError(f"gpus: {self.gpus} cannot hold one stage of {self.gpus_per_stage} GPUs")


@dataclass(frozen=True)
class Fate:
    """What happens to one attempt: an infrastructure failure after ``infra_after_s`` of running
    (None: none), a deterministic failure at ``broken_at`` (a fraction of the stage's work; None:
    the stage is sound), a preemption after ``preempt_after_s`` of running (None: none)."""

    infra_after_s: Optional[float] = None
    broken_at: Optional[float] = None
    preempt_after_s: Optional[float] = None


#: (stage, attempt number from 0) -> Fate; the default draws from the model's seed.
FateFunction = Callable[[StageSpec, int], Fate]


@dataclass
class Outcome:
    """What one run gave."""

    makespan_s: float
    done: int
    unfinished: int
    gpu_hours: float
    gpu_hours_wasted: float
    human_interventions: int
    automatic_retries: int
    failures: dict = field(default_factory=dict)
    preemptions: int = 0
    #: stage key -> when it was done.
    finished_at: dict = field(default_factory=dict)


def drawn_fates(model: Model) -> FateFunction:
    """The model's random fates, a pure function of (seed, stage key, attempt)."""
    p_infra = model.failure_p * (1 - model.deterministic_share)
    p_broken = model.failure_p * model.deterministic_share
    rate = model.preemptions_per_hour / 3600.0

    def fate(stage: StageSpec, attempt: int) -> Fate:
        broken = random.Random(f"{model.seed}/{stage.key}/broken")
        broken_at = broken.random() if broken.random() < p_broken else None
        draw = random.Random(f"{model.seed}/{stage.key}/{attempt}")
        infra = draw.random() * stage.duration_s if draw.random() < p_infra else None
        preempt = draw.expovariate(rate) if rate > 0 else None
        return Fate(infra, broken_at, preempt)

    return fate


class _Stage:
    __slots__ = ("spec", "state", "progress", "attempts", "retries_used", "requeues", "priority", "array",
                 "failure", "waiting_on")

    def __init__(self, spec: StageSpec):
        self.spec = spec
        self.state = "waiting"  # waiting, pending, running, done, failed, blocked
        self.progress = 0.0  # seconds of work kept (checkpointed)
        self.attempts = 0
        self.retries_used = 0
        self.requeues = 0
        self.priority: tuple = ()
        self.array: Optional[int] = None
        self.failure: Optional[str] = None
        self.waiting_on = 0


class _Array:
    __slots__ = ("members", "deps", "dependents", "missing", "ok", "dead")

    def __init__(self, members: list[str], deps: set[int]):
        self.members = members
        self.deps = deps
        self.dependents: list[int] = []
        self.missing = len(members)  # members not done yet
        self.ok = False
        self.dead = False


def _waves(keys: list[str], stages: Mapping[str, _Stage]) -> dict[str, int]:
    """Depth of each of ``keys`` among ``keys`` (dependencies outside them count as wave -1)."""
    inside = set(keys)
    wave: dict[str, int] = {}
    for key in keys:  # keys come in dependency order
        wave[key] = 1 + max((wave[d] for d in stages[key].spec.deps if d in inside), default=-1)
    return wave


class Simulation:
    """One run of ``model`` over the DAG ``specs`` (in dependency order)."""

    def __init__(self, specs: list[StageSpec], model: Model, fate: Optional[FateFunction] = None):
        self.model = model
        self.fate = fate or drawn_fates(model)
        self.order = [spec.key for spec in specs]
        self.stages = {spec.key: _Stage(spec) for spec in specs}
        position = {key: i for i, key in enumerate(self.order)}
        for spec in specs:
            missing = [d for d in spec.deps if position.get(d, len(specs)) > position[spec.key]]
            if missing:
                raise ValueError(f"stage {spec.key}: dependencies not listed before it: {missing}")
        self.dependents: dict[str, list[str]] = defaultdict(list)
        for spec in specs:
            for dep in spec.deps:
                self.dependents[dep].append(spec.key)
        self.kinds = {kind: i for i, kind in enumerate(dict.fromkeys(spec.kind for spec in specs))}
        self.slots = model.gpus // model.gpus_per_stage
        self.running = 0
        self.queue: list[tuple[tuple, str]] = []
        self.events: list[tuple[float, int, str, str, int]] = []
        self.sequence = 0
        self.now = 0.0
        self.arrays: list[_Array] = []
        self.submissions = 0
        self.human_due = False
        self.human_gave_up = False
        self.done_since_resume = 0
        self._began: dict[str, float] = {}  # the running attempt's start and restart cost, by stage
        self._overhead: dict[str, float] = {}
        self.out = Outcome(0.0, 0, 0, 0.0, 0.0, 0, 0, defaultdict(int))

    # ---- the event loop -----------------------------------------------------------------
    def run(self) -> Outcome:
        """Simulate until nothing can happen any more; return the outcome."""
        self._submit(self.order)
        self._start_ready()
        while self.events:
            self.now, _, what, key, token = heapq.heappop(self.events)
            if what == "human":
                self._human()
            else:
                stage = self.stages[key]
                if stage.state != "running" or stage.attempts != token:
                    continue
                getattr(self, "_" + what)(stage)
            self._start_ready()
        self.out.unfinished = sum(s.state != "done" for s in self.stages.values())
        self.out.failures = dict(self.out.failures)
        return self.out

    def _at(self, time: float, what: str, key: str = "", token: int = 0) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, what, key, token))

    def _start_ready(self) -> None:
        while self.running < self.slots and self.queue:
            _, key = heapq.heappop(self.queue)
            stage = self.stages[key]
            if stage.state == "pending":
                self._start(stage)

    def _enqueue(self, stage: _Stage) -> None:
        stage.state = "pending"
        heapq.heappush(self.queue, (stage.priority, stage.spec.key))

    def _start(self, stage: _Stage) -> None:
        spec = stage.spec
        fate = self.fate(spec, stage.attempts)
        overhead = self.model.restart_s if stage.attempts else 0.0
        stage.attempts += 1
        stage.state = "running"
        self.running += 1
        remaining = spec.duration_s - stage.progress
        ends = [(overhead + remaining, "finish")]
        if fate.infra_after_s is not None and fate.infra_after_s < remaining:
            ends.append((overhead + fate.infra_after_s, "infra"))
        if fate.broken_at is not None and fate.broken_at * spec.duration_s >= stage.progress:
            ends.append((overhead + fate.broken_at * spec.duration_s - stage.progress, "broken"))
        if fate.preempt_after_s is not None and fate.preempt_after_s < overhead + remaining:
            ends.append((fate.preempt_after_s, "preempt"))
        after, what = min(ends, key=lambda end: (end[0], end[1] != "finish"))
        self._at(self.now + after, what, spec.key, stage.attempts)
        self._began[spec.key], self._overhead[spec.key] = self.now, overhead

    def _stop(self, stage: _Stage, kept_until: float) -> None:
        """End the running attempt; the work is kept up to ``kept_until`` (seconds of the stage)."""
        key = stage.spec.key
        ran = self.now - self._began[key]
        gained = max(0.0, kept_until - stage.progress)
        gpus = self.model.gpus_per_stage
        self.out.gpu_hours += ran * gpus / 3600
        self.out.gpu_hours_wasted += (ran - gained) * gpus / 3600
        stage.progress = max(stage.progress, kept_until)
        self.running -= 1

    def _checkpoint(self, stage: _Stage, reached: float) -> float:
        """The work kept when an attempt dies at ``reached``: up to the last epoch checkpoint."""
        spec = stage.spec
        if not spec.epochs:
            return 0.0
        epoch = spec.duration_s / spec.epochs
        return max(stage.progress, int(reached / epoch + 1e-9) * epoch)

    def _reached(self, stage: _Stage) -> float:
        return stage.progress + max(0.0, self.now - self._began[stage.spec.key] - self._overhead[stage.spec.key])

    # ---- what ends an attempt --------------------------------------------------------------
    def _finish(self, stage: _Stage) -> None:
        self._stop(stage, stage.spec.duration_s)
        stage.state = "done"
        self.out.done += 1
        self.done_since_resume += 1
        self.out.makespan_s = max(self.out.makespan_s, self.now)
        self.out.finished_at[stage.spec.key] = self.now
        if self.model.policy == "new":
            for key in self.dependents[stage.spec.key]:
                waiter = self.stages[key]
                waiter.waiting_on -= 1
                if waiter.state == "waiting" and waiter.waiting_on == 0:
                    self._enqueue(waiter)
        elif stage.array is not None:
            array = self.arrays[stage.array]
            array.missing -= 1
            if array.missing == 0 and not array.dead:
                array.ok = True
                for index in array.dependents:
                    self._release(index)

    def _infra(self, stage: _Stage) -> None:
        self._stop(stage, self._checkpoint(stage, self._reached(stage)))
        self._failed(stage, INFRASTRUCTURE)

    def _broken(self, stage: _Stage) -> None:
        self._stop(stage, self._checkpoint(stage, self._reached(stage)))
        self._failed(stage, DETERMINISTIC)

    def _preempt(self, stage: _Stage) -> None:
        self._stop(stage, self._reached(stage))  # the signal saves a mid-epoch checkpoint
        self.out.preemptions += 1
        stage.requeues += 1
        if stage.requeues > self.model.max_requeues:
            self._failed(stage, INFRASTRUCTURE)
        else:
            self._enqueue(stage)

    def _failed(self, stage: _Stage, failure: str) -> None:
        self.out.failures[failure] += 1
        if self.model.policy == "new" and failure == INFRASTRUCTURE and stage.retries_used < self.model.retries:
            stage.retries_used += 1
            stage.requeues = 0
            self.out.automatic_retries += 1
            self._enqueue(stage)
            return
        stage.state, stage.failure = "failed", failure
        if self.model.policy == "new":
            self._block_dependents(stage.spec.key)
            if failure == INFRASTRUCTURE:
                self._call_human()
        else:
            if stage.array is not None:
                self._kill_array(stage.array)
            self._call_human()

    # ---- blocking and humans ------------------------------------------------------------------
    def _block_dependents(self, key: str) -> None:
        todo = list(self.dependents[key])
        while todo:
            waiter = self.stages[todo.pop()]
            if waiter.state == "waiting":
                waiter.state = "blocked"
                todo.extend(self.dependents[waiter.spec.key])

    def _kill_array(self, index: int) -> None:
        """An array that can never complete: so can no array that waits on it (DependencyNeverSatisfied)."""
        todo = [index]
        while todo:
            current = todo.pop()
            array = self.arrays[current]
            if array.dead or array.ok:
                continue
            array.dead = True
            todo.extend(array.dependents)
            for key in array.members:
                member = self.stages[key]
                if member.state == "waiting" and member.array == current:
                    member.state = "blocked"
                    self._call_human()  # status shows it blocked: someone has to resume

    def _call_human(self) -> None:
        if not self.human_due and not self.human_gave_up:
            self.human_due = True
            self._at(self.now + self.model.human_delay_s, "human")

    def _human(self) -> None:
        self.human_due = False
        failed = [s.failure for s in self.stages.values() if s.state == "failed"]
        futile = self.out.human_interventions and self.done_since_resume == 0 and DETERMINISTIC in failed \
            and INFRASTRUCTURE not in failed
        if futile or self.out.human_interventions >= self.model.max_resumes:
            self.human_gave_up = True
            return
        if self.model.policy == "new":
            again = [k for k in self.order if self.stages[k].state == "failed"
                     and self.stages[k].failure == INFRASTRUCTURE]
            again += [k for k in self.order if self.stages[k].state == "blocked"]
        else:
            again = [k for k in self.order if self.stages[k].state in ("failed", "blocked")]
        if not again:
            return
        self.out.human_interventions += 1
        self.done_since_resume = 0
        for key in again:
            stage = self.stages[key]
            stage.state, stage.failure, stage.retries_used, stage.requeues = "waiting", None, 0, 0
        self._submit([k for k in self.order if k in set(again)])

    # ---- submission ----------------------------------------------------------------------------
    def _submit(self, keys: list[str]) -> None:
        """Submit ``keys`` (in dependency order) as the policy does: a launch or a resume."""
        self.submissions += 1
        wave = _waves(keys, self.stages)
        if self.model.policy == "new":
            for index, key in enumerate(keys):
                stage = self.stages[key]
                stage.priority = (self.submissions, wave[key], self.kinds[stage.spec.kind], index)
            for key in keys:  # in dependency order: a stage behind a deterministic failure stays blocked
                stage = self.stages[key]
                states = [self.stages[d].state for d in stage.spec.deps]
                stage.waiting_on = sum(state != "done" for state in states)
                if any(state in ("failed", "blocked") for state in states):
                    stage.state = "blocked"
                elif stage.waiting_on == 0:
                    self._enqueue(stage)
            return
        groups: dict[tuple[int, int], list[str]] = defaultdict(list)
        for key in keys:
            groups[(wave[key], self.kinds[self.stages[key].spec.kind])].append(key)
        for (w, kind), members in sorted(groups.items()):
            deps = {self.stages[d].array for key in members for d in self.stages[key].spec.deps
                    if self.stages[d].state != "done"}
            index = len(self.arrays)
            array = _Array(members, {d for d in deps if d is not None})
            self.arrays.append(array)
            for position, key in enumerate(members):
                stage = self.stages[key]
                stage.array, stage.priority = index, (self.submissions, w, kind, position)
            for dep in array.deps:
                self.arrays[dep].dependents.append(index)
            self._release(index)

    def _release(self, index: int) -> None:
        """Start an old-policy array's members once every array it waits for is complete."""
        array = self.arrays[index]
        if array.dead:
            return
        if any(self.arrays[d].dead for d in array.deps):
            self._kill_array(index)
            return
        if all(self.arrays[d].ok for d in array.deps):
            for key in array.members:
                if self.stages[key].state == "waiting":
                    self._enqueue(self.stages[key])


def simulate(specs: list[StageSpec], model: Model, fate: Optional[FateFunction] = None) -> Outcome:
    """Run ``model`` over ``specs`` (in dependency order) once."""
    return Simulation(specs, model, fate).run()


def critical_path_s(specs: list[StageSpec]) -> float:
    """The longest chain of durations through the DAG (in dependency order): no cluster is faster."""
    ends: dict[str, float] = {}
    for spec in specs:
        ends[spec.key] = spec.duration_s + max((ends[d] for d in spec.deps), default=0.0)
    return max(ends.values(), default=0.0)
