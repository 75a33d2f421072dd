"""The demo sweep's wall time vs the summed compute time of its stages.

Runs ``sweeps/digits.yaml`` (or the sweep given) into a fresh temporary workspace with the
local backend and prints: the wall time of the launch, the summed ``wall_time_s`` of every
stage (time inside the worker's training/evaluation), the ideal wall time (that compute
spread over the workers, but never below the DAG's critical path) and the orchestration
overhead (wall / ideal): process start-up, scheduling, artifact checks, ledger and results
writes.

    python bench/orchestration_overhead.py [SWEEP.yaml] [key=value ...]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator import driver  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> None:
    """Run the sweep and print the figures."""
    sweep = Path(argv[0]) if argv and not "=" in argv[0] else ROOT / "sweeps" / "digits.yaml"
    overrides = [arg for arg in argv if "=" in arg]
    with tempfile.TemporaryDirectory(prefix="prunesweep-bench-") as tmp:
        spec = load_spec(sweep, overrides + [f"workspace={tmp}/ws"])
        workers = spec.local.workers or len(os.sched_getaffinity(0))
        started = time.perf_counter()
        plan, summary = driver.launch(spec, str(sweep), progress=False)
        wall = time.perf_counter() - started
        stages_dir = Path(tmp, "ws", "stages")
        seconds = {key: json.loads((stages_dir / key / "DONE.json").read_text())["metrics"].get("wall_time_s", 0.0)
                   for key in plan.stages}
    compute = sum(seconds.values())
    finish: dict[str, float] = {}  # plan.stages is in dependency order
    for key, stage in plan.stages.items():
        finish[key] = seconds[key] + max((finish[dep] for dep in stage.deps.values()), default=0.0)
    critical_path = max(finish.values())
    ideal = max(compute / workers, critical_path)
    print(f"sweep {spec.name}: {summary.ran} stages ({plan.trainings} trainings, {plan.total_epochs:g} epochs), "
          f"{workers} workers")
    print(f"  wall time of launch:        {wall:8.1f} s")
    print(f"  summed stage compute:       {compute:8.1f} s")
    print(f"  critical path (compute):    {critical_path:8.1f} s")
    print(f"  ideal = max(compute / workers, critical path): {ideal:.1f} s")
    print(f"  wall / ideal:               {wall / ideal:8.2f}x  (orchestration overhead {100 * (wall / ideal - 1):.0f}%)")


if __name__ == "__main__":
    main(sys.argv[1:])
