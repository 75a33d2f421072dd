"""A discrete-event model of a sweep's DAG running on a GPU cluster, under three submission policies.

``bench/campaign_simulation.py`` feeds it the planner's DAG, ``bench/campaign_validation.py``
checks it against the real local SLURM cluster, and ``tests/unit/test_campaign_simulation.py``
checks it on DAGs small enough to add up by hand. The event loop is ``bench/campaign_engine.py``,
the nodes ``bench/campaign_cluster.py``.

**The cluster** has ``gpus`` GPUs in nodes of ``gpus_per_node`` (default: one stage's GPUs). A
stage's job asks for its :attr:`StageSpec.gpus` (default ``gpus_per_stage``): within one node
when it fits, else whole nodes. Eligible pending jobs start in priority order, the first node(s)
that fit first; SLURM's default ``priority/basic`` orders jobs by submission, and the tasks of an
array by index. A job that does not fit lets later ones start (backfill without reservations).

**Policies** (every one submits its arrays or jobs in the order of
``orchestrator/backends/slurm/submission.py``'s ``plan_arrays``, from the same settings):

- ``shipped``, what the SLURM backend does, taken from its own code: the arrays of
  ``plan_arrays`` (one per DAG wave and kind, chunked to ``max_array_size``, throttled to
  ``array_parallelism`` running tasks), each job waiting ``afterany`` for the jobs of its own
  inputs (the plan's ``waits``) and ordered by the plan's ``nice`` (critical path first: the
  driver's priority, a stage's longest remaining chain, here in seconds of the model's
  durations), then submission; each job first checks its stage's inputs and ends blocked within ``check_s`` when one is
  missing; a stage process killed by a signal is restarted inside its job (same node, no queue)
  up to the backend's ``retries``; a deterministic failure fails the stage. ``retry_mode``
  ``requeue`` or ``resubmit`` asks what the same retries would cost as a SLURM requeue
  (the job keeps its priority, after ``requeue_delay_s``) or a fresh submission (the back of
  the queue).
- ``wave_arrays`` (the SLURM backend before issue 26): the same arrays, each waiting ``afterany``
  for the whole arrays before it, in submission order; otherwise as ``shipped``.
- ``per_stage`` (the baseline of issue 11): each stage waits for its own dependencies only, a
  retry is requeued, a failure blocks exactly its dependents at once.
- ``afterok`` (the SLURM backend before issue 11): the same arrays waiting ``afterok``; no
  retries; a failure kills its array and, transitively, every array after it.

A stage still failing after its retries, or blocked, waits for a human who runs ``resume``
``human_delay_s`` after the first such failure: it reruns every failed and blocked stage (and,
under ``shipped``, cancels and reruns the queued stages behind them, which ``status`` shows
blocked). The human is not called for a deterministic failure alone, and gives up when only
deterministic failures are left and nothing finished since the previous resume, or after
``max_resumes``.

**Failures** (common random numbers: the same seed gives every policy the same draws, attempt by
attempt): an attempt fails with probability ``failure_p``; a share ``deterministic_share`` of
stages are broken (an exception at the same point of every attempt); of the other failures a
share ``node_failure_share`` takes the job's node down (SLURM requeues the job when
``node_requeue``, its ``JobRequeue``/``--requeue``; otherwise the stage fails ``NodeFailure``),
the rest kill the stage process (retried). Each happens after a running time drawn uniformly
over the stage; a resumed attempt starts from the last epoch checkpoint. Preemptions: a
Poisson process of ``preemptions_per_hour`` per running job; the job saves a mid-epoch
checkpoint and is requeued (submitit requeues a preempted job without limit). Correlated
failures: a *bad node* (``bad_node_at_s``) fails every attempt that starts on it after
``bad_node_fail_s`` (the stage process dies, so the job retries it on the same node) until it
is drained ``drain_after_s`` later (and back, repaired, ``repair_s`` after that); a *partition
outage* (``outage_at_s``, ``outage_s``) takes every node down: running jobs fail as on a node
failure, nothing starts until it ends.

**Costs**: every job start takes ``job_start_s`` before the stage works (the blocked check:
``check_s``); every attempt after a stage's first ``restart_s`` more (reading the checkpoint);
every job holds its GPUs ``job_end_s`` after its stage ends. GPU-hours are counted while a job
holds GPUs; wasted ones did not become kept work (lost work since a checkpoint, start-ups,
restarts, blocked jobs). GPUs idle while a human is awaited are not counted (others take them).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Optional

POLICIES = ("shipped", "wave_arrays", "per_stage", "afterok")
RETRY_MODES = ("in_job", "requeue", "resubmit")
INFRASTRUCTURE, DETERMINISTIC, NODE_FAILURE, BAD_NODE = "infrastructure", "deterministic", "node failure", "bad node"
#: seconds SLURM keeps a requeued batch job pending (its BeginTime): ``cred_expire`` (default 120 s) + 1.
SLURM_REQUEUE_DELAY_S = 121.0


@dataclass(frozen=True)
class StageSpec:
    """One stage of the DAG: how long it trains on its GPUs and what it waits for."""

    key: str
    kind: str
    duration_s: float
    deps: tuple[str, ...] = ()
    #: epoch checkpoints: the work is kept in steps of ``duration_s / epochs`` (0: none).
    epochs: int = 0
    #: GPUs of its job (0: the model's ``gpus_per_stage``).
    gpus: int = 0


@dataclass(frozen=True)
class Model:
    """The cluster, the policy and the failure model of one run (see the module's docstring)."""

    gpus: int
    policy: str = "shipped"
    gpus_per_stage: int = 1
    gpus_per_node: int = 0
    #: the sweep's ``slurm:`` section: what ``plan_arrays`` and the in-job retries read.
    slurm: Mapping = field(default_factory=dict)
    max_array_size: int = 1000
    failure_p: float = 0.0
    deterministic_share: float = 0.0
    node_failure_share: float = 0.0
    node_requeue: bool = True
    preemptions_per_hour: float = 0.0
    #: retries of the ``per_stage`` baseline (``shipped`` reads the backend's own from ``slurm``).
    retries: int = 2
    retry_mode: str = "in_job"
    #: a what-if: pending jobs start longest remaining chain first, not in submission order.
    critical_path_first: bool = False
    #: a what-if: distributed stages (``ranks``) retried inside their job like the others (the backend does not).
    retry_distributed: bool = False
    human_delay_s: float = 12 * 3600.0
    restart_s: float = 0.0
    #: from the launch to the first job's start (the submission, the scheduler's first pass).
    launch_s: float = 0.0
    job_start_s: float = 0.0
    check_s: float = 0.0
    job_end_s: float = 0.0
    requeue_delay_s: float = 0.0
    max_resumes: int = 100
    bad_node_at_s: Optional[float] = None
    bad_node_fail_s: float = 60.0
    drain_after_s: float = 6 * 3600.0
    #: a drained node is back (repaired) this long after it was drained (None: never).
    repair_s: Optional[float] = None
    outage_at_s: Optional[float] = None
    outage_s: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"policy: {self.policy!r}; allowed: {', '.join(POLICIES)}")
        if self.retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode: {self.retry_mode!r}; allowed: {', '.join(RETRY_MODES)}")
        if self.gpus < self.gpus_per_stage:
            raise ValueError(f"gpus: {self.gpus} cannot hold one stage of {self.gpus_per_stage} GPUs")

    @property
    def node_gpus(self) -> int:
        """GPUs per node."""
        return self.gpus_per_node or self.gpus_per_stage


@dataclass(frozen=True)
class Fate:
    """What happens to one attempt: its stage process is killed after ``infra_after_s`` of running
    (None: not), it raises at ``broken_at`` (a fraction of the stage's work; None: the stage is
    sound), it is preempted after ``preempt_after_s`` of running, its node fails after
    ``node_after_s`` of running."""

    infra_after_s: Optional[float] = None
    broken_at: Optional[float] = None
    preempt_after_s: Optional[float] = None
    node_after_s: Optional[float] = None


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
    #: stage key -> when its work was done.
    finished_at: dict = field(default_factory=dict)
    #: stage key -> its state at the end: done, failed, blocked, or waiting (never started).
    states: dict = field(default_factory=dict)
    #: the stages some attempt of which was retried automatically.
    retried: set = field(default_factory=set)
    #: sbatch calls (arrays, or jobs of the per-stage baseline) over the run.
    submissions: int = 0
    #: jobs SLURM requeued after a node failure.
    node_requeues: int = 0


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
        if infra is not None and draw.random() < model.node_failure_share:
            return Fate(None, broken_at, preempt, infra)
        return Fate(infra, broken_at, preempt)

    return fate


def simulate(specs: list[StageSpec], model: Model, fate: Optional[FateFunction] = None) -> Outcome:
    """Run ``model`` over ``specs`` (in dependency order) once."""
    from campaign_engine import Simulation

    return Simulation(specs, model, fate or drawn_fates(model)).run()


def critical_path_s(specs: list[StageSpec]) -> float:
    """The longest chain of durations through the DAG (in dependency order): no cluster is faster."""
    ends: dict[str, float] = {}
    for spec in specs:
        ends[spec.key] = spec.duration_s + max((ends[d] for d in spec.deps), default=0.0)
    return max(ends.values(), default=0.0)


def remaining_chain_s(specs: list[StageSpec]) -> dict[str, float]:
    """Stage -> its duration plus the longest chain of durations after it (in dependency order)."""
    after: dict[str, float] = {}
    dependents: dict[str, list[str]] = {spec.key: [] for spec in specs}
    for spec in specs:
        for dep in spec.deps:
            dependents[dep].append(spec.key)
    for spec in reversed(specs):
        after[spec.key] = spec.duration_s + max((after[k] for k in dependents[spec.key]), default=0.0)
    return after


def critical_stages(specs: list[StageSpec]) -> set[str]:
    """The stages on a longest chain of durations (every one, where several chains tie)."""
    ends: dict[str, float] = {}
    for spec in specs:
        ends[spec.key] = spec.duration_s + max((ends[d] for d in spec.deps), default=0.0)
    after, longest = remaining_chain_s(specs), max(ends.values(), default=0.0)
    return {spec.key for spec in specs
            if abs(ends[spec.key] - spec.duration_s + after[spec.key] - longest) <= 1e-6 * max(longest, 1.0)}


def with_more_gpus(specs: list[StageSpec], keys: set[str], factor: int, gpus_per_stage: int) -> list[StageSpec]:
    """The DAG where the stages ``keys`` get ``factor`` times their GPUs at the same global batch: each takes
    ``1 / factor`` of its time (linear data-parallel scaling, as the durations assume)."""
    return [replace(spec, gpus=(spec.gpus or gpus_per_stage) * factor, duration_s=spec.duration_s / factor)
            if spec.key in keys else spec for spec in specs]


def lower_bound_s(specs: list[StageSpec], gpus: int, gpus_per_stage: int = 1) -> float:
    """max(critical path, GPU-seconds of work / GPUs): no policy on ``gpus`` GPUs finishes sooner."""
    work = sum(spec.duration_s * (spec.gpus or gpus_per_stage) for spec in specs)
    return max(critical_path_s(specs), work / gpus)
