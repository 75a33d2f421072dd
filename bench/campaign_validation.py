"""The campaign simulator against the real SLURM: one DAG, its durations and failures, run for real and simulated.

The DAG is the planner's (``sweeps/paper/imagenet_resnet50.yaml`` with two pruning fractions
and two seeds, planned like ``bench/campaign_simulation.py`` does: 48 stages of four kinds). Each
stage's worker (``bench/sleep_worker.py``) sleeps a duration drawn from ``--seed``; drawn stages
fail: one IMP round and one evaluation have their process killed by SIGKILL (the SLURM job
retries them), one IMP round raises (its dependents are blocked). The DAG is launched through
the SLURM backend on the cluster (``SlurmBackend.run``, the worker's CPU as the slot: as many
stages at once as the cluster has CPUs) and simulated by ``bench/campaign_model.py``'s
``shipped`` policy with the same durations, failures and slots. The simulator's costs (a job's
start-up before its stage works, the input check of a blocked job, the time from a stage's end
to the next job, a retry's restart) are measured first by a separate calibration run on the
same cluster (:func:`calibrate`). A second, small DAG (:func:`barrier_dag`) checks the wave barrier
itself: run for real, it must match the shipped policy (each job waits for its own input's job)
and not the backend's policy before issue 26 (each array waits for the whole arrays before it).

Compared: the makespan (launch to the last stage done) and the sets of stages done, retried,
blocked and failed. Needs a reachable SLURM (``tests/cluster/slurm.sh start`` then
``. /tmp/prunesweep-slurm/env.sh``); every job it submits ends or is cancelled.

    python bench/campaign_validation.py [--seed 0] [--shortest-s 2] [--longest-s 8]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from campaign_model import Fate, Model, StageSpec, lower_bound_s, remaining_chain_s, simulate  # noqa: E402
from sleep_worker import TIMES_FILE  # noqa: E402

from orchestrator.backends.base import StageToRun  # noqa: E402
from orchestrator.backends.slurm.attempts import record_path  # noqa: E402
from orchestrator.backends.slurm.inputs import blocked_record_path  # noqa: E402

RUNNER = "bench.sleep_worker:sleep_stage"
SWEEP = ROOT / "sweeps" / "paper" / "imagenet_resnet50.yaml"
OVERRIDES = ["dataset={name: digits}", "arch={name: small_cnn}", "pruning.fractions=[0.8, 0.512]", "seeds=[0, 1]"]
#: the backend's settings of both runs (the defaults but for the pause between sbatch calls).
SETTINGS = {"default_time_min": 10, "submit_interval_s": 0.0, "cpus_per_task": 1}
EPOCHS = 4


@dataclass
class Stage:
    """A stage of the validation DAG: a StageSpec plus its injected failure."""

    spec: StageSpec
    fail: str | None = None  # "signal" or "raise"
    fail_at: float = 0.0


@dataclass
class Run:
    """What a run gave: the makespan and each stage's end state, from either side."""

    makespan_s: float
    states: dict[str, str]
    retried: set[str]
    #: stage -> seconds from launch to its work's end (done stages).
    finished_at: dict[str, float] = field(default_factory=dict)
    #: when the launch began (wall clock; real runs only).
    launched: float = 0.0

    def of(self, state: str) -> set[str]:
        """The stages that ended ``state``."""
        return {key for key, value in self.states.items() if value == state}


@dataclass(frozen=True)
class Costs:
    """What a job costs on the cluster beyond its stage's work, measured by :func:`calibrate`."""

    launch_s: float
    job_start_s: float
    check_s: float
    job_end_s: float
    restart_s: float


def validation_dag(seed: int, shortest_s: float = 2.0, longest_s: float = 8.0) -> list[Stage]:
    """The planner's stages with drawn durations and failures, in dependency order."""
    from orchestrator.planning.planner import plan_sweep
    from orchestrator.spec import load_spec

    plan = plan_sweep(load_spec(SWEEP, OVERRIDES))
    draw = random.Random(seed)
    stages = {}
    for key, planned in plan.stages.items():
        duration = round(draw.uniform(shortest_s, longest_s), 2) if planned.epochs else 0.5
        stages[key] = Stage(StageSpec(key, planned.kind, duration, tuple(planned.deps.values()),
                                      EPOCHS if planned.epochs else 0))
    dependents: dict[str, list[str]] = {key: [] for key in stages}
    for stage in stages.values():
        for dep in stage.spec.deps:
            dependents[dep].append(stage.spec.key)
    # an IMP round with an IMP round after it raises; an IMP round elsewhere and an evaluation are killed once
    rounds = [k for k, s in stages.items() if s.spec.kind == "imp"
              and any(stages[d].spec.kind == "imp" for d in dependents[k])]
    broken = draw.choice(sorted(rounds))
    below = _descendants(broken, dependents) | {broken}
    killed = [draw.choice(sorted(k for k in rounds if k not in below)),
              draw.choice(sorted(k for k, s in stages.items() if s.spec.kind == "eval" and k not in below))]
    stages[broken].fail, stages[broken].fail_at = "raise", 0.3
    for key in killed:
        stages[key].fail, stages[key].fail_at = "signal", 0.6
    return list(stages.values())


def _descendants(key: str, dependents: dict[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(dependents[key])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(dependents[current])
    return seen


def fates(stages: list[Stage]):
    """The injected failures as the model's fate function."""
    by_key = {stage.spec.key: stage for stage in stages}

    def fate(spec: StageSpec, attempt: int) -> Fate:
        stage = by_key[spec.key]
        if stage.fail == "raise":
            return Fate(broken_at=stage.fail_at)
        if stage.fail == "signal" and attempt == 0:
            return Fate(infra_after_s=stage.fail_at * spec.duration_s)
        return Fate()

    return fate


def cluster_slots() -> tuple[int, int]:
    """(CPUs of the default partition, CPUs per node): how many one-CPU stages run at once."""
    out = subprocess.run(["sinfo", "-h", "-o", "%c %D"], capture_output=True, text=True, timeout=30, check=True)
    cpus, nodes = (int(word.rstrip("+")) for word in out.stdout.split()[:2])
    return cpus * nodes, cpus


def run_on_slurm(workspace: Path, stages: list[Stage], timeout_s: float = 900.0, settings: dict = SETTINGS) -> Run:
    """Launch the DAG through the SLURM backend, wait for every job to end, read what happened."""
    jobs, launched = launch_on_slurm(workspace, stages, settings)
    wait_for_jobs(jobs, timeout_s)
    return read_run(Path(workspace), [stage.spec.key for stage in stages], launched)


def launch_on_slurm(workspace: Path, stages: list[Stage], settings: dict = SETTINGS) -> tuple[dict[str, str], float]:
    """Launch the DAG through the SLURM backend, each stage's priority its longest remaining chain (as the
    driver gives it, here in seconds: the simulator's); return each stage's job id and when the launch began."""
    from orchestrator.backends.slurm.backend import SlurmBackend

    chain = remaining_chain_s([stage.spec for stage in stages])
    tasks = []
    for stage in stages:
        folder = Path(workspace, "stages", stage.spec.key)
        folder.mkdir(parents=True)
        (folder / "stage.json").write_text(json.dumps({
            "deps": {str(i): dep for i, dep in enumerate(stage.spec.deps)}, "sleep_s": stage.spec.duration_s,
            "epochs": stage.spec.epochs, "fail": stage.fail, "fail_at": stage.fail_at}))
        tasks.append(StageToRun(stage.spec.key, folder, stage.spec.deps, chain[stage.spec.key], kind=stage.spec.kind))
    jobs: dict[str, str] = {}
    events = type("Events", (), {"started": lambda self, key, host, pid, job_id=None: jobs.update({key: job_id})})()
    launched = time.time()
    SlurmBackend(settings, Path(workspace, "slurm"), runner=RUNNER).run(tasks, events)
    return jobs, launched


def wait_for_jobs(jobs: dict[str, str], timeout_s: float) -> None:
    """Until none of the arrays of ``jobs`` (stage -> job id) is queued or running (cancelled after ``timeout_s``)."""
    from orchestrator.backends.slurm.backend import cancel

    arrays = sorted({job_id.split("_")[0] for job_id in jobs.values()})
    deadline = time.monotonic() + timeout_s
    while subprocess.run(["squeue", "-h", "-j", ",".join(arrays), "-o", "%i"], capture_output=True, text=True,
                         timeout=60).stdout.strip():
        if time.monotonic() > deadline:
            cancel(arrays)
            raise TimeoutError(f"the DAG's jobs still ran after {timeout_s:.0f} s; cancelled")
        time.sleep(0.5)


def read_run(workspace: Path, keys: list[str], launched: float) -> Run:
    """A finished real run, from its stage folders and the backend's records."""
    states, retried, finished = {}, set(), {}
    for key in keys:
        folder = workspace / "stages" / key
        if (folder / "DONE.json").is_file():
            states[key] = "done"
            ends = [r["end"] for r in _times(folder) if r.get("how") == "done"]
            finished[key] = max(ends) - launched
        elif blocked_record_path(workspace, key).is_file():
            states[key] = "blocked"
        else:
            states[key] = "failed"
        try:
            record = json.loads(record_path(workspace, key).read_text())
        except OSError:
            continue
        if any(failure.get("retried") for failure in record.get("failures", [])):
            retried.add(key)
    return Run(max(finished.values(), default=0.0), states, retried, finished, launched)


def _times(folder: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (folder / TIMES_FILE).read_text().splitlines() if line.strip()]
    except OSError:
        return []


def calibrate(workspace: Path, slots: int, length: int = 8) -> Costs:
    """Measure a job's costs on this cluster with ``slots`` chains of ``length`` short stages of one kind (so
    ``slots`` jobs start together, as in the DAGs), the second stage of the first chain killed once: the launch,
    a job's start-up and input check (medians), from the end of a wave's last stage to the next wave's first
    job (the mean: it varies with the job's and the scheduler's polling, and what adds up is the mean)."""
    chains = [[Stage(StageSpec(f"calibration-{c}{i}", "step", 0.5, (f"calibration-{c}{i - 1}",) if i else (), 2))
               for i in range(length)] for c in range(slots)]
    chains[0][1].fail, chains[0][1].fail_at = "signal", 0.5
    launched = run_on_slurm(workspace, [stage for chain in chains for stage in chain], timeout_s=300).launched
    records = [[_times(workspace / "stages" / stage.spec.key) for stage in chain] for chain in chains]
    waves = [[rs for chain in records for rs in chain[i:i + 1]] for i in range(length)]
    firsts = [r for wave in waves for rs in wave for r in rs if r.get("attempt") == 0 and "start" in r]
    ends = [max(r["end"] for rs in wave for r in rs if r.get("how") == "done") for wave in waves]
    starts = [min(rs[0]["job_start"] for rs in wave) for wave in waves]
    killed = next(r["end"] for r in records[0][1] if r.get("how") == "signal")
    retry = next(r["start"] for r in records[0][1] if r.get("attempt") == 1 and "start" in r)
    return Costs(launch_s=min(starts) - launched,
                 job_start_s=statistics.median(r["start"] - r["job_start"] for r in firsts),
                 check_s=statistics.median(r["process_start"] - r["job_start"] for r in firsts),
                 job_end_s=statistics.mean(start - end for start, end in zip(starts[1:], ends[:-1], strict=True)),
                 restart_s=retry - killed)


def simulate_on(stages: list[Stage], costs: Costs, slots: int, per_node: int, policy: str = "shipped"
                ) -> tuple[Run, float]:
    """The model's ``policy`` on the same DAG, failures and slots; and the DAG's lower bound."""
    specs = [stage.spec for stage in stages]
    model = Model(gpus=slots, gpus_per_node=per_node, policy=policy, slurm=SETTINGS, max_array_size=1000,
                  launch_s=costs.launch_s, job_start_s=costs.job_start_s, check_s=costs.check_s, job_end_s=costs.job_end_s,
                  restart_s=costs.restart_s, human_delay_s=float("inf"))
    out = simulate(specs, model, fates(stages))
    return Run(out.makespan_s, out.states, out.retried, out.finished_at), lower_bound_s(specs, slots)


def compare(real: Run, simulated: Run) -> list[str]:
    """What differs between the two runs beyond the tolerances: an empty list when they agree."""
    problems = []
    ratio = simulated.makespan_s / real.makespan_s
    if not 0.9 <= ratio <= 1.1:
        problems.append(f"makespan: simulated {simulated.makespan_s:.1f} s vs real {real.makespan_s:.1f} s "
                        f"({ratio:.3f}x)")
    for state in ("done", "failed", "blocked"):
        if real.of(state) != simulated.of(state):
            problems.append(f"{state}: real only {sorted(real.of(state) - simulated.of(state))}, "
                            f"simulated only {sorted(simulated.of(state) - real.of(state))}")
    if real.retried != simulated.retried:
        problems.append(f"retried: real {sorted(real.retried)} vs simulated {sorted(simulated.retried)}")
    return problems


def table(stages: list[Stage], real: Run, simulated: Run, bound: float, costs: Costs, slots: int,
          baseline: Run | None = None) -> list[str]:
    """The side-by-side table (markdown) of one validation; ``baseline``: the whole-array policy simulated."""
    def names(keys):
        return ", ".join(sorted(keys)) or "none"

    lines = [f"DAG: {len(stages)} stages of {SWEEP.relative_to(ROOT)} ({' '.join(OVERRIDES[2:])}), "
             f"{sum(s.spec.duration_s for s in stages):.0f} s of work on {slots} slots; lower bound {bound:.1f} s",
             f"measured costs: launch {costs.launch_s:.2f} s, job start-up {costs.job_start_s:.2f} s, input check {costs.check_s:.2f} s, "
             f"stage end to next job {costs.job_end_s:.2f} s, in-job restart {costs.restart_s:.2f} s", "",
             "| | real SLURM | simulated (shipped policy) |", "|---|---|---|",
             f"| makespan (s) | {real.makespan_s:.1f} | {simulated.makespan_s:.1f} "
             f"({simulated.makespan_s / real.makespan_s:.3f}x real) |",
             f"| makespan / lower bound | {real.makespan_s / bound:.3f} | {simulated.makespan_s / bound:.3f} |"]
    for state in ("done", "failed", "blocked"):
        lines.append(f"| {state} | {len(real.of(state))} | {len(simulated.of(state))}"
                     f"{' (same stages)' if real.of(state) == simulated.of(state) else ' (DIFFERENT stages)'} |")
    lines.append(f"| retried in their job | {names(real.retried)} | "
                 f"{'the same' if real.retried == simulated.retried else names(simulated.retried)} |")
    if baseline is not None:
        lines.append(f"| makespan if each array waited for the whole arrays before it (simulated) | | "
                     f"{baseline.makespan_s:.1f} ({baseline.makespan_s / real.makespan_s:.3f}x real) |")
    lines.append(f"| a done stage's end, simulated vs real: mean gap (s) | | {finish_gap(real, simulated):.1f}"
                 + (f" (whole arrays: {finish_gap(real, baseline):.1f})"
                    if baseline is not None else "") + " |")
    return lines


def finish_gap(real: Run, simulated: Run) -> float:
    """The mean gap between when a stage's work ended for real and in the simulation (stages done in both)."""
    both = sorted(set(real.finished_at) & set(simulated.finished_at))
    return statistics.mean(abs(real.finished_at[k] - simulated.finished_at[k]) for k in both) if both else 0.0


def barrier_dag(waves: int = 6, long_s: float = 6.0, short_s: float = 1.0) -> list[Stage]:
    """Two chains of one kind whose durations alternate out of step: were each wave's array to wait for the whole
    array before it (``wave_arrays``, the backend before issue 26), it would take about ``waves x long_s``; the
    shipped policy, each job waiting for its own input's job, takes about half as long."""
    stages = []
    for chain, first_long in (("a", True), ("b", False)):
        for level in range(waves):
            duration = long_s if (level % 2 == 0) == first_long else short_s
            deps = (f"barrier-{chain}{level - 1}",) if level else ()
            stages.append(Stage(StageSpec(f"barrier-{chain}{level}", "imp", duration, deps)))
    return stages


@dataclass
class Validation:
    """One validation: the DAG, both runs, the lower bound, the measured costs, the slots; the wave barrier
    (``barrier_dag``) run for real and simulated under the shipped and the whole-array (``wave_arrays``) policies."""

    stages: list[Stage]
    real: Run
    simulated: Run
    bound: float
    costs: Costs
    slots: int
    #: the whole-array policy (the backend before issue 26) on the same DAG.
    baseline: Run
    barrier: tuple[Run, Run, Run]

    def table(self) -> list[str]:
        """The side-by-side tables."""
        real, shipped, whole = self.barrier
        return table(self.stages, self.real, self.simulated, self.bound, self.costs, self.slots, self.baseline) + [
            "", f"wave barrier: {len(barrier_dag())} stages, two chains of one kind alternating 6 s and 1 s stages",
            "", "| | real SLURM | simulated (shipped policy) | simulated (each array waits for the whole arrays "
            "before it) |", "|---|---|---|---|",
            f"| makespan (s) | {real.makespan_s:.1f} | {shipped.makespan_s:.1f} "
            f"({shipped.makespan_s / real.makespan_s:.3f}x real) | {whole.makespan_s:.1f} "
            f"({whole.makespan_s / real.makespan_s:.3f}x real) |"]

    def problems(self) -> list[str]:
        """What differs beyond the tolerances: the validation DAG (:func:`compare`); the wave barrier's
        makespan simulated within 10%, and the whole-array policy's more than 10% above it (each job really
        waited for its own input only)."""
        real, shipped, whole = self.barrier
        problems = compare(self.real, self.simulated)
        if not 0.9 <= shipped.makespan_s / real.makespan_s <= 1.1:
            problems.append(f"wave barrier: simulated {shipped.makespan_s:.1f} s vs real {real.makespan_s:.1f} s")
        if whole.makespan_s / real.makespan_s <= 1.1:
            problems.append(f"wave barrier: the whole-array policy's {whole.makespan_s:.1f} s is not 10% above "
                            f"the real {real.makespan_s:.1f} s: the test cannot tell the policies apart")
        return problems


def validate(workspace: Path, seed: int, shortest_s: float = 2.0, longest_s: float = 8.0) -> Validation:
    """Calibrate, run both DAGs for real, simulate them."""
    slots, per_node = cluster_slots()
    costs = calibrate(Path(workspace, "calibration"), slots)
    stages = validation_dag(seed, shortest_s, longest_s)
    real = run_on_slurm(Path(workspace, "dag"), stages)
    simulated, bound = simulate_on(stages, costs, slots, per_node)
    baseline, _ = simulate_on(stages, costs, slots, per_node, policy="wave_arrays")
    barrier = barrier_dag()
    barrier_runs = (run_on_slurm(Path(workspace, "barrier"), barrier), simulate_on(barrier, costs, slots, per_node)[0],
                    simulate_on(barrier, costs, slots, per_node, policy="wave_arrays")[0])
    return Validation(stages, real, simulated, bound, costs, slots, baseline, barrier_runs)


def main() -> None:
    """Print the side-by-side table and what differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shortest-s", type=float, default=2.0)
    parser.add_argument("--longest-s", type=float, default=8.0)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="prunesweep-validation-") as tmp:
        validation = validate(Path(tmp), args.seed, args.shortest_s, args.longest_s)
    print("\n".join(validation.table()))
    problems = validation.problems()
    print()
    print("agree: makespans within 10%, the same stages done, failed, blocked and retried; the whole-array policy "
          "more than 10% slower on the wave barrier than the real run" if not problems
          else "DISAGREE:\n  " + "\n  ".join(problems))
    print(f"{time.perf_counter() - started:.0f} s on this machine")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
