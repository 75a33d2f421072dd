"""What measuring line coverage of ``workers/`` costs the test suite: a selection of tests run with and without it.

``python -m pytest`` measures coverage (``--cov`` in setup.cfg's ``addopts``; coverage.py's C tracer, since
Python 3.11 has no ``sys.monitoring`` core), in the test process and in every Python process the tests start.
This runs the same selection alternately with ``--no-cov`` and with coverage, ``--repeats`` times each, and
prints the wall times and the ratio of the medians. The coverage data of these runs goes to a scratch file,
never the checkout's ``.coverage``.

    python bench/coverage_overhead.py [--repeats 2] [-- PYTEST_ARGS...]
    (default selection: tests/workers/test_workers_training.py tests/workers/test_workers_stages.py)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["tests/workers/test_workers_training.py", "tests/workers/test_workers_stages.py"]


def run(selection: list[str], coverage: bool, data: Path) -> float:
    """Wall seconds of one ``python -m pytest`` of ``selection``; fails loudly when a test fails."""
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    if not coverage:
        args.append("--no-cov")
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "COVERAGE_FILE": str(data)})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"pytest failed ({'with' if coverage else 'without'} coverage):\n{done.stdout[-3000:]}")
    return seconds


def main() -> None:
    """Print both medians and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("selection", nargs="*", default=DEFAULT)
    args = parser.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for coverage in ((False, True) if repeat % 2 == 0 else (True, False)):  # alternate: drift hits both
                times[coverage].append(run(args.selection, coverage, Path(scratch) / ".coverage"))
                print(f"  {'with' if coverage else 'without'} coverage: {times[coverage][-1]:.1f} s", flush=True)
    plain, measured = statistics.median(times[False]), statistics.median(times[True])
    print(f"{' '.join(args.selection)}: without coverage {plain:.1f} s, with {measured:.1f} s "
          f"(medians of {args.repeats}): ratio {measured / plain:.2f}")


if __name__ == "__main__":
    main()
