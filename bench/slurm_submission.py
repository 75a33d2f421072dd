"""Submitting a 2,000-stage DAG to SLURM: sbatch calls and time to return, vs one sbatch per stage.

Needs a reachable SLURM (e.g. ``tests/cluster/slurm.sh start`` then
``. /tmp/prunesweep-slurm/env.sh``). Builds a synthetic DAG of ``--chains`` chains of
``--length`` stages whose worker sleeps briefly, submits it through the SLURM backend
(one array per wave and kind, each job then narrowed to ``afterany`` on the array tasks of its
own inputs: ``orchestrator/backends/slurm/submission.py``, ``task_updates.py``) with a counting ``sbatch`` on PATH, then times
plain ``sbatch`` of one job per stage on ``--single`` stages and scales it to the DAG.
Every job it submits is cancelled at the end.

    python bench/slurm_submission.py [--chains 100 --length 20 --single 100]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.backends.base import StageToRun  # noqa: E402
from orchestrator.backends.slurm.backend import SlurmBackend  # noqa: E402


def sleep_stage(folder: Path) -> None:
    """The stand-in worker: sleep briefly."""
    time.sleep(0.5)


class _Submitted:
    def __init__(self):
        self.job_ids = []

    def started(self, key, host, pid, job_id=None):
        self.job_ids.append(job_id)


def main() -> None:
    """Print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--single", type=int, default=100, help="stages submitted one sbatch each, to scale from")
    args = parser.parse_args()
    real_sbatch = shutil.which("sbatch")
    if real_sbatch is None:
        sys.exit("no sbatch on PATH: start a cluster first (tests/cluster/slurm.sh start)")
    with tempfile.TemporaryDirectory(prefix="prunesweep-bench-") as tmp:
        shim = Path(tmp, "bin")
        shim.mkdir()
        calls = Path(tmp, "sbatch-calls")
        (shim / "sbatch").write_text(f"#!/bin/sh\necho >> {calls}\nexec {real_sbatch} \"$@\"\n")
        (shim / "sbatch").chmod(0o755)
        os.environ["PATH"] = f"{shim}:{os.environ['PATH']}"
        tasks = []
        for chain in range(args.chains):
            for level in range(args.length):
                key = f"stage-{chain}-{level}"
                folder = Path(tmp, "stages", key)
                folder.mkdir(parents=True)
                tasks.append(StageToRun(key, folder, (f"stage-{chain}-{level - 1}",) if level else (), kind=f"level{level}"))
        backend = SlurmBackend({"default_time_min": 5}, Path(tmp, "logs"), runner="bench.slurm_submission:sleep_stage")
        events = _Submitted()
        started = time.perf_counter()
        backend.run(tasks, events)
        dag_seconds = time.perf_counter() - started
        dag_calls = len(calls.read_text().splitlines())
        arrays = sorted({job_id.split("_")[0] for job_id in events.job_ids})

        started = time.perf_counter()
        singles = []
        for _ in range(args.single):
            out = subprocess.run([real_sbatch, "--parsable", "--wrap", "sleep 0.5", "-o", "/dev/null"],
                                 capture_output=True, text=True, check=True).stdout
            singles.append(out.strip().split(";")[0])
        single_seconds = time.perf_counter() - started
        subprocess.run(["scancel", *arrays, *singles], capture_output=True)
    per_stage = single_seconds / args.single
    print(f"{len(tasks)} stages ({args.chains} chains x {args.length} levels):")
    print(f"  prunesweep launch (arrays + afterany): {dag_calls} sbatch calls, {dag_seconds:.2f} s to return")
    print(f"  one sbatch per stage: {args.single} calls took {single_seconds:.2f} s "
          f"-> {len(tasks)} calls ~ {per_stage * len(tasks):.1f} s "
          f"({per_stage * len(tasks) / dag_seconds:.1f}x longer), and no dependencies between them")


if __name__ == "__main__":
    main()
