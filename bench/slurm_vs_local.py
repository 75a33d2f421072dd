"""The demo sweep's wall time on the local SLURM cluster vs the local backend (scheduler overhead).

Needs a reachable SLURM (``tests/cluster/slurm.sh start`` then ``. /tmp/prunesweep-slurm/env.sh``).
Runs ``sweeps/digits.yaml`` (or ``--sweep``) twice in fresh workspaces: with the local backend
(one worker per core) and on SLURM (one CPU per job, so as many jobs at once as the node has
cores), the SLURM run timed from ``launch`` until every stage has its ``DONE.json``. Prints
both wall times, their ratio, and whether the two results tables agree.

    python bench/slurm_vs_local.py [--sweep sweeps/digits.yaml] [key.path=value ...]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import results  # noqa: E402
from orchestrator.planning.planner import plan_sweep  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "orchestrator", *args], check=True, cwd=ROOT,
                   env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL)


def _top1(workspace: Path) -> dict:
    return {(r.mask_source, r.init, r.nominal_fraction, r.seed): r.top1 for r in results.load(workspace).itertuples()}


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default=str(ROOT / "sweeps" / "digits.yaml"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prunesweep-bench-") as tmp:
        local, slurm = Path(tmp, "local"), Path(tmp, "slurm")
        stages = len(plan_sweep(load_spec(args.sweep, [*args.overrides, f"workspace={local}"])).stages)

        started = time.perf_counter()
        _cli("launch", args.sweep, *args.overrides, f"workspace={local}", "backend=local", "--no-progress")
        local_seconds = time.perf_counter() - started

        started = time.perf_counter()
        _cli("launch", args.sweep, *args.overrides, f"workspace={slurm}", "backend=slurm")
        submitted_seconds = time.perf_counter() - started
        while len(list(slurm.glob("stages/*/DONE.json"))) < stages:
            time.sleep(0.5)
        slurm_seconds = time.perf_counter() - started
        _cli("status", str(slurm))  # records the results
        same = _top1(local) == _top1(slurm)
    print(f"{args.sweep}: {stages} stages on {os.cpu_count()} cores")
    print(f"  local backend: {local_seconds:.1f} s")
    print(f"  local SLURM:   {slurm_seconds:.1f} s ({submitted_seconds:.1f} s to submit), "
          f"{slurm_seconds / local_seconds:.2f}x the local backend")
    print(f"  results tables identical: {same}")


if __name__ == "__main__":
    main()
