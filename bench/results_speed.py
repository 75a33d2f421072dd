"""How fast `prunesweep results` answers over many rows in many workspaces.

Builds ``--workspaces`` workspaces (10) of ``--sweeps`` sweeps each (20) x 3 mask sources x
2 inits x 14 fractions x 6 seeds: 10,080 rows per workspace, 100,800 in all, recorded
through ``results.record`` into each workspace's real ``results.sqlite``, next to a real
(empty) ledger. Then runs the command as a user does, a fresh ``python -m orchestrator
results WS1 ... WS10`` process each time (interpreter start and imports included), for the
plain summary, a ``--where`` query, ``--group-by``, ``--pivot`` on one sweep and
``--compare``, and ``prunesweep report`` over all of them (the HTML page); best of ``--repeats`` (3)
each, output sent to a file. Prints each figure
and its ratio to the 2-second target, then where the time of one in-process call goes.

The ledgers hold no stages, so the figures leave out what reconciling each workspace's
stages with their artifacts costs (that grows with the stages, not the rows: see
bench/status_verify.py).

    python bench/results_speed.py [--workspaces 10] [--sweeps 20] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import results  # noqa: E402
from orchestrator.state.ledger import Ledger  # noqa: E402

TARGET_S = 2.0
FRACTIONS = [0.8 ** level for level in range(1, 29, 2)]  # 14 fractions, 80% down to 0.24%
SEEDS = range(6)


def build(workspace: Path, index: int, sweeps: int) -> int:
    """A workspace with an empty ledger and ``sweeps`` sweeps' rows in its results table."""
    workspace.mkdir(parents=True)
    Ledger(workspace).close()
    rng = random.Random(index)
    rows = []
    for sweep in range(sweeps):
        for mask_source in ("labels", "rotnet", "random"):
            for init in ("winning_ticket", "reinit"):
                for level, fraction in enumerate(FRACTIONS):
                    for seed in SEEDS:
                        rows.append(dict(
                            sweep=f"sweep{sweep:02d}", stage_key=f"eval-{sweep}-{mask_source}-{init}-{level}-{seed}",
                            dataset="cifar10", arch="resnet18", mask_source=mask_source, init=init, rewind="1ep",
                            rewind_iteration=391, level=2 * level + 1, nominal_fraction=fraction,
                            measured_fraction=fraction * 0.999, seed=seed, top1=rng.uniform(0.5, 0.95),
                            epochs=160, wall_time_s=rng.uniform(100, 200)))
    return results.record(workspace, rows)


def timed_command(args: list[str], out: Path, repeats: int, command: str = "results") -> float:
    """Best wall time of ``repeats`` runs of ``python -m orchestrator COMMAND ARGS`` (exit 0 required)."""
    best = float("inf")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(repeats):
        with out.open("w") as sink:
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "orchestrator", command, *args], stdout=sink, check=True,
                           env=env)
            best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=10)
    parser.add_argument("--sweeps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="results-speed-") as scratch:
        base = Path(scratch)
        workspaces = [base / f"ws{i}" for i in range(options.workspaces)]
        total = sum(build(workspace, i, options.sweeps) for i, workspace in enumerate(workspaces))
        names = [str(workspace) for workspace in workspaces]
        print(f"{total:,} rows in {len(workspaces)} workspaces; best of {options.repeats} fresh processes each, "
              f"target {TARGET_S:g} s")
        out = base / "out.txt"
        cases = {
            "summary (every setting)": [],
            "--where 'measured_fraction<0.05 and mask_source in labels,rotnet' --where top1>=0.9":
                ["--where", "measured_fraction<0.05 and mask_source in labels,rotnet", "--where", "top1>=0.9"],
            "--group-by mask_source,init,nominal_fraction": ["--group-by", "mask_source,init,nominal_fraction"],
            "--pivot --sweep sweep00": ["--pivot", "--sweep", "sweep00"],
            "--compare mask_source=labels,rotnet": ["--compare", "mask_source=labels,rotnet"],
        }
        for label, args in cases.items():
            seconds = timed_command([*names, *args], out, options.repeats)
            lines = sum(1 for _ in out.open())
            print(f"  {label}: {seconds:.2f} s ({seconds / TARGET_S:.2f} of the target; {lines:,} lines printed)")

        time_report(names, base, options.repeats)

        started = time.perf_counter()
        frame = results.load(workspaces)
        loaded = time.perf_counter()
        summary = results.summarize(frame)
        summarized = time.perf_counter()
        compared = results.compare(frame, "mask_source", "labels", "rotnet")
        done = time.perf_counter()
        print(f"in one process: load {loaded - started:.2f} s ({len(frame):,} rows), summarize "
              f"{summarized - loaded:.2f} s ({len(summary):,} settings), compare {done - summarized:.2f} s "
              f"({len(compared):,} settings)")


def time_report(names: list[str], base: Path, repeats: int) -> None:
    """``prunesweep report WS1 ... WS10 -o report.html``: the whole page (its figure pools the 1,200 curves of the
    one (dataset, network), the two default comparisons list their first 200 rows), best of ``repeats``."""
    page = base / "report.html"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = timed_command([*names, "-o", str(page)], base / "out.txt", repeats, command="report")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds per run: what the wall time is on an idle machine (one process, one thread), and a fairer
    # figure than the wall time on a machine shared with other work
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / repeats
    print(f"  report -o report.html: {seconds:.2f} s ({seconds / TARGET_S:.2f} of the target; "
          f"{cpu:.2f} s of CPU per run; {page.stat().st_size / 1e6:.1f} MB page)")


if __name__ == "__main__":
    main()
