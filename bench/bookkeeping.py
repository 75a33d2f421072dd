"""Bookkeeping that scales (issue 16): the driver's and the commands' costs on workspaces of
1k, 10k and 50k stages, built through the project's own planning and manifest code.

Each workspace is the demo sweep (``sweeps/digits.yaml``) with as many seeds as give the
size (the stages of one seed are counted from a one-seed plan), planned by the planner, its folders written by ``materialise`` (as
``launch`` does: the *launch write* figure), registered in the ledger, and every stage
finished as a worker finishes one: an artifact and its metrics, then ``DONE.json`` through
``workers.stages.artifacts.write_done``. Nothing is trained. While building, ``os.fsync`` is
skipped for the finished stages' files (setup only; the launch write keeps its syncs).

Figures, at each size:

- *driver per finished stage*: the last 100 stages are left unfinished; each is then
  finished on disk (not timed) and handed to the driver's own event handler, timed:
  mark running, verify its checksums, ingest its results row, mark done;
- *first status after stages finished outside the driver* (10k only): every stage was
  finished on disk while the ledger still says they run on SLURM, and no results row
  exists; one ``prunesweep status`` process verifies, records and ingests them all;
- *status, every stage done*: ``prunesweep status`` as a user runs it (a fresh process,
  imports included), best of 3, once the artifacts' stamps are recorded.

Then ``plan sweeps/digits.yaml`` (best of 5 processes) and whether it loaded pandas,
pyarrow or matplotlib; the 10%-of-images ImageNet sweep planned on an ImageNet-sized folder
of empty files (1,000 classes x 1,281 images, made in a temp folder; ``--imagenet-classes``
shrinks it); ``results`` and ``results --pivot`` over one workspace of 100,800 rows. Every
figure is printed with its target; the last line is the summary the issue asks for.

    python bench/bookkeeping.py [--sizes 1000,10000,50000] [--scratch DIR] [--keep DIR]

Commands run as a user's do: the package's bytecode is compiled once before the first timed
command (``compileall``, as a regular install does) and ``PYTHONDONTWRITEBYTECODE`` is dropped
from their environment, so no figure includes compiling our modules.

``--sizes ''`` skips the workspaces (only the plan and results figures); ``--scratch
/dev/shm`` builds on a memory file system where the disk is slow or shared.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from orchestrator.state.artifact_stamps import SETTLED_S  # noqa: E402
from orchestrator.driver import _LedgerEvents  # noqa: E402
from orchestrator.state.ledger import Ledger  # noqa: E402
from orchestrator.planning.planner import plan_sweep, settings_fingerprint  # noqa: E402
from orchestrator.state.reconcile import ingest_results, reconcile  # noqa: E402
from orchestrator.spec import validate_spec  # noqa: E402
from orchestrator.state.workspace import materialise
from workers.stages.paths import required_files, stage_dir  # noqa: E402
from workers.stages.artifacts import write_done  # noqa: E402

HELD_OUT = 100
TARGETS = {"driver_ms": 5.0, "status_s": 1.0, "first_status_s": 2.0, "launch_s": 5.0, "plan_s": 0.25,
           "imagenet_plan_s": 3.0, "results_s": 1.0}
ENV = {**{name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"},
       "PYTHONPATH": str(ROOT)}


def sweep_spec(workspace: Path, seeds: int):
    """The demo sweep with ``seeds`` seeds, into ``workspace``."""
    raw = yaml.safe_load((ROOT / "sweeps" / "digits.yaml").read_text())
    raw.update(name="bookkeeping", workspace=str(workspace), seeds=list(range(seeds)))
    return validate_spec(raw, "bench/bookkeeping.py")


def stages_per_seed() -> int:
    """How many stages one seed of the demo sweep plans."""
    return len(plan_sweep(sweep_spec(Path(tempfile.gettempdir()) / "unused", 1)).stages)


def finish(workspace: Path, stage) -> None:
    """Write what a finished stage writes: every artifact its kind must list, then its checksummed manifest."""
    folder = stage_dir(workspace, stage.key)
    artifacts = sorted(required_files(stage.kind, stage.config))
    for name in artifacts:
        (folder / name).write_bytes(stage.key.encode() * 8)
    metrics = {"fraction_remaining": 0.5, "top1": 0.9, "epochs": stage.epochs or 1, "wall_time_s": 1.0,
               "zero_fraction": 0.0}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    write_done(folder, [*artifacts, "metrics.json"], metrics)


@contextlib.contextmanager
def no_fsync():
    """Skip fsync while the bench builds (the finished stages' files are setup, not measured)."""
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real


def command(*args: str, cwd: Path | None = None) -> float:
    """Wall time of one ``python -m orchestrator ARGS`` process (exit 0 required)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator", *args], stdout=subprocess.DEVNULL, check=True, env=ENV,
                   cwd=cwd)
    return time.perf_counter() - started


def best(repeats: int, *args: str, cwd: Path | None = None) -> float:
    """Best of ``repeats`` runs of :func:`command`."""
    return min(command(*args, cwd=cwd) for _ in range(repeats))


def measure_size(base: Path, size: int) -> dict:
    """Build one workspace of about ``size`` stages and take its figures."""
    workspace = base / f"ws{size}"
    started = time.perf_counter()
    spec = sweep_spec(workspace, max(1, round(size / stages_per_seed())))
    plan = plan_sweep(spec)
    stages = list(plan.stages.values())
    planned = time.perf_counter() - started
    workspace.mkdir(parents=True)
    started = time.perf_counter()
    materialise(workspace, stages)
    launch_write = time.perf_counter() - started
    ledger = Ledger(workspace)
    ledger.register(spec.name, "bench", settings_fingerprint(spec), spec.model_dump(), stages, plan.cells)
    held_out, finished = stages[-HELD_OUT:], stages[:-HELD_OUT]
    with no_fsync():
        for stage in finished:
            finish(workspace, stage)
    figures = {"stages": len(stages), "plan_s": planned, "launch_s": launch_write}
    if size == 10_000:
        with ledger.batched():
            for stage in finished:  # submitted to SLURM, which ran them; the ledger was not told
                ledger.mark_running(stage.key, "node", None, "slurm", f"{1000 + len(stage.key)}_1")
        ledger.close()
        figures["first_status_s"] = command("status", str(workspace))
        ledger = Ledger(workspace)
    else:
        ingest_results(workspace, ledger, reconcile(workspace, ledger, lock_held_by_us=True))
    events = _LedgerEvents(workspace, ledger, "local", 0, progress=False)
    spent = 0.0
    for stage in held_out:
        with no_fsync():
            finish(workspace, stage)
        started = time.perf_counter()
        events.started(stage.key, socket.gethostname(), os.getpid())
        assert events.finished(stage.key)
        spent += time.perf_counter() - started
    events.close()
    figures["driver_ms"] = 1000 * spent / len(held_out)
    time.sleep(SETTLED_S + 0.2)  # the stamps of files younger than SETTLED_S are not kept
    with contextlib.redirect_stdout(io.StringIO()):
        assert len(reconcile(workspace, ledger)) == len(stages)
    ledger.close()
    figures["status_s"] = best(3, "status", str(workspace))
    return figures


def imagenet_plan(base: Path, classes: int, per_class: int) -> float:
    """Seconds of one ``plan`` of the 10%-of-images ImageNet sweep on a folder of empty files."""
    root = base / "imagenet"
    for split, count in (("train", per_class), ("val", 50)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(count):
                os.close(os.open(folder / f"n{c:08d}_{i}.JPEG", os.O_CREAT | os.O_WRONLY, 0o644))
    sweep = ROOT / "sweeps" / "paper" / "imagenet_resnet50_10pct_images.yaml"
    return command("plan", str(sweep), f"dataset.root={root}", f"workspace={base / 'imagenet-ws'}")


def heavy_imports_of_plan() -> list[str]:
    """The heavy packages a ``plan sweeps/digits.yaml`` process loads."""
    probe = ("import sys\nfrom orchestrator.cli import main\nmain(['plan', 'sweeps/digits.yaml'])\n"
             "print(' '.join(m for m in ('pandas', 'pyarrow', 'matplotlib') if m in sys.modules), file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=ENV, capture_output=True, text=True, check=True)
    return run.stderr.split()


def results_speed(base: Path) -> dict:
    """``results`` and ``results --pivot`` over one workspace of 100,800 rows (bench/results_speed.py's rows)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from results_speed import build  # the rows of bench/results_speed.py, 200 sweeps in one workspace

    workspace = base / "results100k"
    rows = build(workspace, 0, 200)
    return {"rows": rows, "results_s": best(3, "results", str(workspace)),
            "pivot_s": best(3, "results", str(workspace), "--pivot", "--sweep", "sweep00")}


def verdict(value: float, target: float) -> str:
    return f"{'met' if value <= target else 'NOT met'} (target {target:g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000", help="workspace sizes in stages, comma-separated")
    parser.add_argument("--imagenet-classes", type=int, default=1000)
    parser.add_argument("--imagenet-images", type=int, default=1281, help="training images per class")
    parser.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp folder)")
    parser.add_argument("--scratch", type=Path, help="make the temp folder in this folder (default: the system's)")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",") if size]
    base = options.keep or Path(tempfile.mkdtemp(prefix="bookkeeping-", dir=options.scratch))
    print(f"machine: {socket.gethostname()}, {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start")
    subprocess.run([sys.executable, "-m", "compileall", "-q", "orchestrator", "workers", "results"], cwd=ROOT,
                   env=ENV, check=True, stdout=subprocess.DEVNULL)
    try:
        by_size = {}
        for size in sizes:
            figures = by_size[size] = measure_size(base, size)
            print(f"{figures['stages']:,} stages: driver per finished stage {figures['driver_ms']:.2f} ms, "
                  f"{verdict(figures['driver_ms'], TARGETS['driver_ms'])}; status (all done) "
                  f"{figures['status_s']:.2f} s, {verdict(figures['status_s'], TARGETS['status_s'])}; launch write "
                  f"{figures['launch_s']:.2f} s, {verdict(figures['launch_s'], TARGETS['launch_s'])}; planned in "
                  f"{figures['plan_s']:.2f} s")
            if "first_status_s" in figures:
                first = figures["first_status_s"]
                print(f"  first status after {figures['stages'] - HELD_OUT:,} stages finished outside the driver: "
                      f"{first:.2f} s, {verdict(first, TARGETS['first_status_s'])}")
            shutil.rmtree(base / f"ws{size}", ignore_errors=True)
        if len(sizes) > 1:
            small, large = by_size[sizes[0]], by_size[sizes[-1]]
            per_stage = (large["launch_s"] / large["stages"]) / (small["launch_s"] / small["stages"])
            print(f"ratios {sizes[-1]:,} / {sizes[0]:,} stages: driver per stage "
                  f"{large['driver_ms'] / small['driver_ms']:.2f}x, "
                  f"status {large['status_s'] / small['status_s']:.2f}x "
                  f"(stages {large['stages'] / small['stages']:.0f}x), launch write per stage {per_stage:.2f}x")
        heavy = heavy_imports_of_plan()
        plan_s = best(5, "plan", "sweeps/digits.yaml", cwd=ROOT)
        print(f"plan sweeps/digits.yaml: {plan_s:.3f} s, {verdict(plan_s, TARGETS['plan_s'])}; heavy imports: "
              f"{', '.join(heavy) or 'none'}")
        imagenet_s = imagenet_plan(base, options.imagenet_classes, options.imagenet_images)
        print(f"plan of the 10%-of-images ImageNet sweep on {options.imagenet_classes:,} x "
              f"{options.imagenet_images:,} empty files: {imagenet_s:.2f} s, "
              f"{verdict(imagenet_s, TARGETS['imagenet_plan_s'])}")
        shutil.rmtree(base / "imagenet", ignore_errors=True)
        speed = results_speed(base)
        print(f"results over {speed['rows']:,} rows: {speed['results_s']:.2f} s, "
              f"{verdict(speed['results_s'], TARGETS['results_s'])}; --pivot --sweep sweep00: "
              f"{speed['pivot_s']:.2f} s, {verdict(speed['pivot_s'], TARGETS['results_s'])}")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        if not sizes:
            return
        last = by_size[sizes[-1]]
        print(f"bookkeeping: per-stage driver cost at {sizes[-1] // 1000}k: {last['driver_ms']:.2f} ms; status at "
              f"{sizes[-1] // 1000}k done: {last['status_s']:.2f} s; launch write at {sizes[-1] // 1000}k: "
              f"{last['launch_s']:.2f} s; plan without pandas: {'no' if heavy else 'yes'}")
    finally:
        if options.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
