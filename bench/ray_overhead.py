"""Per-stage overhead of the Ray backend vs the local backend vs Ray Tune, and Ray's memory.

A grid of N independent short stages whose runner only sleeps S seconds runs, in this one
process, on: the local backend (the baseline), the Ray backend on a Ray started here, and
Ray Tune running the same sleeps as a ``grid_search`` on that same Ray; all with P
parallel slots (one CPU each). Per-stage overhead = (wall - N * S / P) * P / N: what each
stage costs beyond its own work. The Ray backend runs twice (the second time its worker
processes already exist); Tune runs with its default (a new actor process per trial) and
with ``reuse_actors``. Also printed: the time to start Ray here, the Ray
backend's workspace probe, and the resident memory (RSS) of the Ray processes this
script started, idle and after the runs (workers kept alive).

    python bench/ray_overhead.py [--stages N] [--sleep S] [--slots P]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.backends.base import StageToRun  # noqa: E402
from orchestrator.backends.local.backend import LocalBackend  # noqa: E402
from orchestrator.backends.ray.backend import RayBackend, probe_workspace  # noqa: E402

RUNNER = "bench.ray_overhead:sleep_stage"
SLEEP_ENV = "PRUNESWEEP_BENCH_SLEEP"


def sleep_stage(folder: Path) -> None:
    """The benchmark's stage: sleep, then write one file into the stage folder."""
    time.sleep(float(os.environ.get(SLEEP_ENV, "0.2")))
    Path(folder, "done").write_text("ok")


class _Count:
    """Events that only count."""

    def __init__(self):
        self.finished_count = self.failed_count = 0

    def started(self, key, host, pid, job_id=None):
        pass

    def finished(self, key):
        self.finished_count += 1
        return True

    def failed(self, key, error_class, message):
        self.failed_count += 1
        print(f"  {key} failed: {error_class}: {message}", file=sys.stderr)

    def blocked(self, key, because_of):
        pass

    def interrupted(self, key):
        pass


def _tasks(root: Path, n: int) -> list[StageToRun]:
    tasks = []
    for i in range(n):
        folder = root / "stages" / f"s{i:04d}"
        folder.mkdir(parents=True)
        tasks.append(StageToRun(f"s{i:04d}", folder, kind="eval"))
    return tasks


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


def _timed(label: str, run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main(argv: list[str]) -> None:
    """Run the three variants and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args(argv)
    n, sleep, slots = args.stages, args.sleep, args.slots
    os.environ[SLEEP_ENV] = str(sleep)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ideal = n * sleep / slots

    def overhead(wall: float) -> float:
        return (wall - ideal) * slots / n * 1000

    import ray

    with tempfile.TemporaryDirectory(prefix="prunesweep-bench-") as tmp:
        tmp = Path(tmp)
        local = LocalBackend(workers=slots, runner=RUNNER)
        events = _Count()
        local_wall = _timed("local", lambda: local.run(_tasks(tmp / "local", n), events))
        assert events.finished_count == n, "the local run did not finish every stage"

        env_vars = {SLEEP_ENV: str(sleep), "PYTHONPATH": os.environ["PYTHONPATH"]}
        start = _timed("ray.init", lambda: ray.init(num_cpus=slots, include_dashboard=False, logging_level="ERROR",
                                                    log_to_driver=False, runtime_env={"env_vars": env_vars}))
        time.sleep(2)  # let Ray's own start-up settle before measuring its memory
        ray_pids = _descendants(os.getpid())
        rss_idle = _rss_mib(ray_pids)
        probe = _timed("probe", lambda: probe_workspace(tmp))
        backend = RayBackend({"max_retries": 0, "resources": {"default": {"num_cpus": 1}}, "attached": True},
                             tmp / "ray", runner=RUNNER)
        events = _Count()
        ray_wall = _timed("ray", lambda: backend.run(_tasks(tmp / "ray", n), events))
        warm_wall = _timed("ray warm", lambda: backend.run(_tasks(tmp / "ray-warm", n), events))
        assert events.finished_count == 2 * n, "a Ray run did not finish every stage"
        rss_after = _rss_mib(_descendants(os.getpid()))
        processes_after = len(_descendants(os.getpid()))

        from ray import tune

        def trainable(config):
            time.sleep(sleep)
            return {"done": 1}

        tune_walls = {}
        for reuse in (False, True):  # False is Tune's default: one new actor process per trial
            tuner = tune.Tuner(tune.with_resources(trainable, {"cpu": 1}),
                               param_space={"stage": tune.grid_search(list(range(n)))},
                               tune_config=tune.TuneConfig(max_concurrent_trials=slots, reuse_actors=reuse),
                               run_config=tune.RunConfig(storage_path=str(tmp / f"tune-{reuse}"), verbose=0))
            outcome = {}
            tune_walls[reuse] = _timed("tune", lambda: outcome.setdefault("grid", tuner.fit()))
            assert not outcome["grid"].errors, "a Tune trial failed"
        ray.shutdown()

    print(f"{n} stages of {sleep:g} s each, {slots} parallel slots (ideal wall {ideal:.1f} s)")
    print(f"  {'':32}{'wall':>9}{'per-stage overhead':>21}{'vs local':>10}")
    for label, wall in (("local backend (baseline)", local_wall), ("Ray backend", ray_wall),
                        ("Ray backend, warm workers", warm_wall),
                        ("Tune grid_search (default)", tune_walls[False]),
                        ("Tune grid_search, reuse_actors", tune_walls[True])):
        print(f"  {label:32}{wall:8.2f}s{overhead(wall):18.0f} ms{wall / local_wall:9.2f}x")
    print(f"  starting Ray here: {start:.2f} s; workspace probe (every node reads a token): {probe:.2f} s")
    print(f"  RSS of the Ray processes started here: {rss_idle:.0f} MiB idle ({len(ray_pids)} processes), "
          f"{rss_after:.0f} MiB after the Ray backend run ({processes_after} processes, workers kept)")


if __name__ == "__main__":
    main(sys.argv[1:])
