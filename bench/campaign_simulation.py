"""The paper's ImageNet ResNet-50 campaign simulated on 16, 64 and 256 GPUs: the shipped SLURM policy and two baselines.

The DAG is the planner's own (``plan_sweep`` of ``sweeps/paper/imagenet_resnet50.yaml``:
567 stages, 525 trainings). The data folder is not needed: as ``tests/unit/test_paper_sweeps.py``
does, the sweep is planned with the digits catalogue entry and ``small_cnn`` in place of
ImageNet and ResNet-50 (the stages, their dependencies and epochs do not depend on them).

A stage's duration is ``epochs x 1,281,167 ImageNet training images x views`` (RotNet 4,
Exemplar 2: ``orchestrator.planning.gpu_hours.VIEWS``) over ``samples/s per GPU x gpus_per_stage``
(linear data-parallel scaling: an assumption). The samples/s come from the measured table
``orchestrator/planning/throughput.json`` (``resnet50`` on ``imagenet`` on ``--device``) when it has the
entry; otherwise from ``--samples-per-s``, whose default (2,600 samples/s per GPU, of the order
of published mixed-precision ResNet-50 training figures on an A100) is an assumption, not a
measurement of this project. A random-mask stage trains nothing and takes ``--untimed-s``.

The model (``bench/campaign_model.py``) states the policies, the costs and the failure classes;
``shipped`` submits the arrays ``orchestrator/backends/slurm/submission.py`` plans from the
sweep's own ``slurm:`` section (``--retries`` overrides its ``retries``), and
``bench/campaign_validation.py`` checks it against the real SLURM. Each row is the mean over
``--seeds`` seeds (every seed gives the same numbers on every run); the lower bound of a row is
max(critical path, GPU-hours of work / GPUs); the reference of ``x failure-free`` is the same
policy and GPU count with no failures and no preemptions. ``--scenarios`` adds a table of what the
first leaves out: correlated failures, node failures with and without SLURM's requeue, and the
queue position a retry gets.

    python bench/campaign_simulation.py [--seeds 5] [--gpus 16 64 256] [--failures 0 0.01 0.05]
        [--deterministic-share 0] [--preemptions-per-hour 0.01] [--human-delay-h 12] [--scenarios]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from campaign_model import (  # noqa: E402
    SLURM_REQUEUE_DELAY_S,
    Model,
    StageSpec,
    critical_path_s,
    critical_stages,
    lower_bound_s,
    simulate,
    with_more_gpus,
)

from orchestrator.planning import gpu_hours  # noqa: E402
from orchestrator.planning.planner import plan_sweep  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402

SWEEP = ROOT / "sweeps" / "paper" / "imagenet_resnet50.yaml"
#: ILSVRC-2012 training images.
IMAGENET_TRAIN = 1_281_167
#: samples/s per GPU when the table has no measured figure: an assumption (see the docstring).
ASSUMED_SAMPLES_PER_S = 2600.0


#: the sweep read with the digits catalogue entry and small_cnn (see the docstring), then ``--set``'s overrides.
STAND_INS = ["dataset={name: digits}", "arch={name: small_cnn}"]


def slurm_settings(retries: int | None = None, overrides: tuple[str, ...] = ()) -> dict:
    """The sweep's own ``slurm:`` section (its defaults where it has none), ``retries`` overridden when given."""
    settings = load_spec(SWEEP, [*STAND_INS, *overrides]).slurm.model_dump()
    return settings if retries is None else {**settings, "retries": retries}


def kind_gpus(settings: dict, kind: str, gpus_per_stage: int) -> int:
    """A stage's GPUs: one per rank of its kind's ``slurm.ranks`` (nodes x tasks_per_node), else ``gpus_per_stage``."""
    ranks = (settings.get("ranks") or {}).get(kind)
    return int(ranks["nodes"]) * int(ranks["tasks_per_node"]) if ranks else gpus_per_stage


def paper_dag(samples_per_s: float, gpus_per_stage: int, untimed_s: float, checkpoints: bool = True,
              overrides: tuple[str, ...] = ()) -> list[StageSpec]:
    """The planner's stages of the ResNet-50 sweep, with durations and GPUs, in dependency order.

    ``checkpoints``: a rerun resumes from the last epoch checkpoint (the worker saves one each
    epoch); False: from scratch. Each stage's GPUs: :func:`kind_gpus` of the sweep's ``slurm:``
    section; its duration at the recipe's global batch scales linearly with them.
    """
    spec = load_spec(SWEEP, [*STAND_INS, *overrides])
    settings = spec.slurm.model_dump()
    plan = plan_sweep(spec)
    stages = []
    for key, stage in plan.stages.items():
        gpus = kind_gpus(settings, stage.kind, gpus_per_stage)
        if stage.epochs:
            views = gpu_hours.VIEWS.get(stage.config.get("task", "labels"), 1)
            duration = stage.epochs * IMAGENET_TRAIN * views / (samples_per_s * gpus)
        else:
            duration = untimed_s
        stages.append(StageSpec(key, stage.kind, duration, tuple(stage.deps.values()),
                                int(stage.epochs) if checkpoints else 0, gpus))
    return stages


def throughput(device: str, override: float | None) -> tuple[float, str]:
    """Samples/s per GPU and where the figure comes from."""
    if override is not None:
        return override, "--samples-per-s"
    measured = gpu_hours.measured_rate("resnet50", "imagenet", device, gpu_hours.load_table())
    if measured is not None:
        return measured, f"orchestrator/planning/throughput.json (resnet50, imagenet, {device})"
    return ASSUMED_SAMPLES_PER_S, f"assumed: no resnet50/imagenet/{device} entry in {gpu_hours.TABLE_FILE.relative_to(ROOT)}"



#: what ``--scenarios`` adds (the shipped policy at the highest failure rate): name, Model fields.
SCENARIOS = [
    ("as in the first table", {}),
    ("half the failures take the node down; SLURM requeues the job (JobRequeue=1)", {"node_failure_share": 0.5}),
    ("the same with requeue off (JobRequeue=0 or --no-requeue): the stage fails NodeFailure",
     {"node_failure_share": 0.5, "node_requeue": False}),
    ("a bad node from day 1 (every attempt on it fails after 60 s), drained after 6 h, back a day later",
     {"bad_node_at_s": 86400.0, "drain_after_s": 6 * 3600.0, "repair_s": 86400.0}),
    ("the same bad node, drained after 24 h", {"bad_node_at_s": 86400.0, "drain_after_s": 86400.0,
                                               "repair_s": 86400.0}),
    ("a 4 h partition outage on day 2; SLURM requeues the running jobs", {"outage_at_s": 2 * 86400.0,
                                                                          "outage_s": 4 * 3600.0}),
    ("the same outage with requeue off", {"outage_at_s": 2 * 86400.0, "outage_s": 4 * 3600.0, "node_requeue": False}),
    ("retries as SLURM requeues (the job keeps its place, pending cred_expire + 1 s)", {"retry_mode": "requeue"}),
    ("retries as fresh submissions (the back of the queue)", {"retry_mode": "resubmit"}),
    ("the backend before issue 26: each array waits for the whole arrays before it, in submission order",
     {"policy": "wave_arrays"}),
    ("what-if, not shipped: distributed stages (slurm.ranks) retried inside their job like the others",
     {"retry_distributed": True}),
]


def arguments() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--gpus", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--failures", type=float, nargs="+", default=[0.0, 0.01, 0.05],
                        help="probability that an attempt of a stage fails")
    parser.add_argument("--deterministic-share", type=float, default=0.0,
                        help="share of failures that are deterministic (the rest: infrastructure)")
    parser.add_argument("--preemptions-per-hour", type=float, default=0.01, help="per running job")
    parser.add_argument("--human-delay-h", type=float, default=12.0, help="until a human runs resume")
    parser.add_argument("--restart-s", type=float, default=300.0, help="extra cost of each restart of a stage")
    parser.add_argument("--job-start-s", type=float, default=60.0, help="a job's start-up before its stage works")
    parser.add_argument("--check-s", type=float, default=5.0, help="a blocked job's input check")
    parser.add_argument("--job-end-s", type=float, default=5.0, help="from a stage's end to the next job on its GPUs")
    parser.add_argument("--requeue-delay-s", type=float, default=SLURM_REQUEUE_DELAY_S,
                        help="a requeued job's BeginTime (SLURM: cred_expire, default 120 s, + 1)")
    parser.add_argument("--retries", type=int, default=None, help="default: the sweep's slurm.retries")
    parser.add_argument("--gpus-per-stage", type=int, default=8, help="of a kind not in the sweep's slurm.ranks")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="a sweep override, as prunesweep's --set (e.g. the backend's per-kind GPUs: "
                             "'slurm.ranks={imp: {nodes: 2, tasks_per_node: 8}}')")
    parser.add_argument("--device", default=gpu_hours.DEFAULT_DEVICE)
    parser.add_argument("--samples-per-s", type=float, default=None, help="per GPU (default: the table, else 2600)")
    parser.add_argument("--untimed-s", type=float, default=60.0, help="duration of a random-mask stage")
    parser.add_argument("--no-checkpoints", action="store_true",
                        help="reruns start from scratch (default: from the last epoch checkpoint)")
    parser.add_argument("--scenarios", action="store_true", help="add the table of correlated failures and retries")
    args = parser.parse_args()
    try:
        for gpus in args.gpus:
            Model(gpus=gpus, gpus_per_stage=args.gpus_per_stage)
    except ValueError as error:
        parser.error(f"--gpus: {error}")
    return args


def models(args: argparse.Namespace, gpus: int, policy: str, **fields) -> tuple[Model, list[Model]]:
    """The failure-free reference and the model of each seed for one row."""
    settings = slurm_settings(args.retries, tuple(args.set))
    common = dict(gpus=gpus, policy=policy, gpus_per_stage=args.gpus_per_stage, gpus_per_node=args.gpus_per_node,
                  slurm=settings,
                  retries=settings["retries"], human_delay_s=args.human_delay_h * 3600, restart_s=args.restart_s,
                  job_start_s=args.job_start_s, check_s=args.check_s, job_end_s=args.job_end_s,
                  requeue_delay_s=args.requeue_delay_s)
    failing = dict(deterministic_share=args.deterministic_share, preemptions_per_hour=args.preemptions_per_hour)
    p = fields.pop("failure_p", max(args.failures))
    return Model(**common), [Model(**common, **failing, **fields, failure_p=p, seed=seed) for seed in range(args.seeds)]


def main() -> None:
    """Print the tables."""
    args = arguments()
    started = time.perf_counter()
    rate, source = throughput(args.device, args.samples_per_s)
    dag = paper_dag(rate, args.gpus_per_stage, args.untimed_s, not args.no_checkpoints, tuple(args.set))
    work = sum(s.duration_s * s.gpus for s in dag) / 3600
    settings = slurm_settings(args.retries, tuple(args.set))
    per_kind = ", ".join(f"{kind} {gpus}" for kind, gpus in sorted({(s.kind, s.gpus) for s in dag}))
    print(f"DAG: {len(dag)} stages of {SWEEP.relative_to(ROOT)} (planner), {work:,.0f} GPU-hours of work; "
          f"{rate:g} samples/s per GPU ({source}); GPUs per stage: {per_kind} "
          f"(slurm.ranks, else --gpus-per-stage), {args.gpus_per_node} per node; "
          f"critical path {critical_path_s(dag) / 86400:.2f} days")
    print(f"failures: {1 - args.deterministic_share:.0%} infrastructure, {args.deterministic_share:.0%} deterministic; "
          f"preemptions {args.preemptions_per_hour:g}/job-hour (requeued after {args.requeue_delay_s:g} s); "
          f"job start-up {args.job_start_s:g} s, blocked check {args.check_s:g} s, job end {args.job_end_s:g} s, "
          f"restart {args.restart_s:g} s more; human resume {args.human_delay_h:g} h after a failure; "
          f"retries {settings['retries']} (slurm.retries); reruns resume from "
          f"{'scratch' if args.no_checkpoints else 'the last epoch checkpoint'}; mean of {args.seeds} seeds")
    print()
    print("| GPUs | failure p | policy | makespan (days) | lower bound (days) | x lower bound | x failure-free "
          "| GPU-h wasted | human resumes | auto retries | stages unfinished | critical chain on 2x GPUs (days) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for gpus in args.gpus:
        bound = lower_bound_s(dag, gpus, args.gpus_per_stage)
        for policy in ("shipped", "wave_arrays", "per_stage", "afterok"):
            reference_model, _ = models(args, gpus, policy)
            reference = simulate(dag, reference_model).makespan_s
            for p in args.failures:
                runs = [simulate(dag, model) for model in models(args, gpus, policy, failure_p=p)[1]]
                makespan = statistics.mean(r.makespan_s for r in runs)
                print(f"| {gpus} | {p:.0%} | {policy} | {makespan / 86400:.2f} | {bound / 86400:.2f} "
                      f"| {makespan / bound:.3f} | {makespan / reference:.3f} "
                      f"| {statistics.mean(r.gpu_hours_wasted for r in runs):,.0f} "
                      f"| {statistics.mean(r.human_interventions for r in runs):.1f} "
                      f"| {statistics.mean(r.automatic_retries for r in runs):.1f} "
                      f"| {statistics.mean(r.unfinished for r in runs):.1f} "
                      f"| {what_if(args, dag, gpus, policy, p) if policy == 'shipped' else ''} |")
                if policy == "shipped" and p == max(args.failures):
                    verdicts.append(verdict(gpus, runs, reference, bound))
    print()
    print(f"targets, shipped policy at {max(args.failures):.0%} failures, no human action; issue 11: within 1.1x of "
          f"failure-free; issue 26: within 1.02x of the lower bound (worst seed):")
    for line in verdicts:
        print("  " + line)
    if args.deterministic_share:
        print("  (with deterministic failures no policy finishes their dependents: the targets are about "
              "infrastructure failures; makespan is then the last stage that can finish)")
    if args.scenarios:
        scenario_table(args, dag)
    print(f"{time.perf_counter() - started:.1f} s on this machine's CPU")


def what_if(args: argparse.Namespace, dag: list[StageSpec], gpus: int, policy: str, p: float) -> str:
    """Where the critical path bounds the campaign: the mean makespan in days (and x its own lower bound) if every
    stage on a longest chain gets twice its GPUs at the same global batch; else a dash."""
    if critical_path_s(dag) < sum(s.duration_s * s.gpus for s in dag) / gpus:
        return "-"
    faster = with_more_gpus(dag, critical_stages(dag), 2, args.gpus_per_stage)
    if max(s.gpus for s in faster) > gpus:
        return "a stage would not fit"
    makespan = statistics.mean(simulate(faster, model).makespan_s for model in models(args, gpus, policy, failure_p=p)[1])
    return f"{makespan / 86400:.2f} ({makespan / lower_bound_s(faster, gpus):.3f}x)"


def verdict(gpus: int, runs, reference: float, bound: float) -> str:
    """Whether the targets hold on ``gpus`` GPUs, and by how much."""
    worst = max(r.makespan_s for r in runs)
    humans = sum(r.human_interventions for r in runs)
    unfinished = " for the stages that can finish" if any(r.unfinished for r in runs) else ""
    issue11 = "met" if worst / reference <= 1.1 and humans == 0 else "NOT met"
    issue26 = "met" if worst / bound <= 1.02 and humans == 0 else "NOT met"
    return (f"{gpus} GPUs: issue 11 {issue11}{unfinished} ({worst / reference:.3f}x), issue 26 {issue26} "
            f"({worst / bound:.3f}x); {humans} human resumes over {len(runs)} seeds")


def scenario_table(args: argparse.Namespace, dag: list[StageSpec]) -> None:
    """The shipped policy under what the first table leaves out, at the highest failure rate."""
    print()
    print(f"shipped policy (unless named), {max(args.failures):.0%} failures, mean of {args.seeds} seeds: "
          "makespan in days (x lower bound, human resumes, stages unfinished)")
    print()
    print("| scenario | " + " | ".join(f"{gpus} GPUs" for gpus in args.gpus) + " |")
    print("|---|" + "---|" * len(args.gpus))
    for name, scenario in SCENARIOS:
        cells = []
        for gpus in args.gpus:
            bound = lower_bound_s(dag, gpus, args.gpus_per_stage)
            fields = dict(scenario)
            runs = [simulate(dag, model) for model in models(args, gpus, fields.pop("policy", "shipped"), **fields)[1]]
            makespan = statistics.mean(r.makespan_s for r in runs)
            cells.append(f"{makespan / 86400:.2f} ({makespan / bound:.3f}x, "
                         f"{statistics.mean(r.human_interventions for r in runs):.1f}, "
                         f"{statistics.mean(r.unfinished for r in runs):.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
