"""What measuring line coverage of ``workers/`` costs the test suite: a selection of tests run with and without it.

``python -m pytest`` measures coverage (``--cov`` in setup.cfg's ``addopts``; coverage.py's C tracer, since
Python 3.11 has no ``sys.monitoring`` core), in the test process and in every Python process the tests start.
This runs the same selection alternately with ``--no-cov`` and with coverage, ``--repeats`` times each, and
prints the medians of the wall times and of the CPU seconds of pytest and every process it waited for (less
moved by other load on a shared machine than the wall time), and their ratios. The coverage data of these runs
goes to a scratch file, never the checkout's ``.coverage``.

    python bench/coverage_overhead.py [--repeats 2] [-- PYTEST_ARGS...]
    (default selection: tests/workers/test_workers_training.py tests/workers/test_workers_stages.py)
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["tests/workers/test_workers_training.py", "tests/workers/test_workers_stages.py"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(selection: list[str], coverage: bool, data: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python -m pytest`` of ``selection``; exits when a test fails."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    if not coverage:
        args.append("--no-cov")
    started, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COVERAGE_FILE": str(data)})
    seconds, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if done.returncode != 0:
        sys.exit(f"pytest failed ({'with' if coverage else 'without'} coverage):\n{done.stdout[-3000:]}")
    return seconds, cpu


def main() -> None:
    """Print the medians with and without coverage and their ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("selection", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for coverage in ((False, True) if repeat % 2 == 0 else (True, False)):  # alternate: drift hits both
                times[coverage].append(run(args.selection, coverage, Path(scratch) / ".coverage"))
                wall, cpu = times[coverage][-1]
                print(f"  {'with' if coverage else 'without'} coverage: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    print(f"{' '.join(args.selection)} (medians of {args.repeats}):")
    for index, what in enumerate(("wall", "CPU")):
        plain = statistics.median(t[index] for t in times[False])
        measured = statistics.median(t[index] for t in times[True])
        print(f"  {what}: without coverage {plain:.1f} s, with {measured:.1f} s: ratio {measured / plain:.2f}")


if __name__ == "__main__":
    main()
