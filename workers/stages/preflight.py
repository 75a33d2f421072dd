"""The ``preflight`` stage kind: a sweep's code path tried on the node its stages get, in minutes.

For each target (a distinct network, task, dataset and rank count of the sweep) it checks,
on this node and through the worker's own code: the data folder (real files decoded by the
worker's loaders, decode rate per core), a few training steps with the sweep's recipe under
its smallest mask (loss finite, pruned weights exactly zero), a checkpoint resumed in a fresh
process (next step compared), the distributed setup over the stage's ranks (weights equal on
every rank) and the steady-state samples/s per device. Every check gives one row of
``preflight.json``: ``target``, ``check``, ``ok`` (True, False, or None where it does not
apply), ``figure``, ``detail`` and ``fix``. A check that fails never stops the others of other
targets; the stage itself ends done, and the orchestrator reads the rows.

The module imports torch only inside the functions that run on the node:
:func:`installed_versions` is read by the submitting side too.
"""
from __future__ import annotations

import math
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

from workers.stages.artifacts import atomic_write_json
from workers.stages.contract import PreflightConfig, PreflightTarget, StageContext, StageOutcome
from workers.stages.paths import PREFLIGHT_RESULT_FILE, preflight_phase_files
from workers.stages.workspace_files import open_regular, read_json, read_tail

#: the distributions whose versions must be the same where the sweep is submitted and on the node.
PACKAGES = ("torch", "torchvision", "numpy", "Pillow", "scikit-learn", "scipy", "pydantic", "PyYAML")
#: environment variables of a distributed rank, removed for the single-process checks.
_RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_SHORT_GPU_NAME = re.compile(r"\b([A-Z]+\d+[A-Z]*)\b")


def installed_versions() -> dict[str, str]:
    """Distribution -> installed version (``-`` when absent) of :data:`PACKAGES`, and Python's."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def device_key() -> str:
    """The throughput table's name of this node's training device: a GPU model's short name
    (``H100``), or ``cpu-<threads>thread``."""
    import torch

    if not torch.cuda.is_available():
        return f"cpu-{torch.get_num_threads()}thread"
    name = torch.cuda.get_device_name(0)
    found = _SHORT_GPU_NAME.search(name)
    return found.group(1) if found else name


def _driver_version() -> str:
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return "-"
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "-"


def environment() -> dict[str, Any]:
    """What this node runs: host, Python and torch stack, device, cores."""
    import torch

    cuda = torch.cuda.is_available()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    facts: dict[str, Any] = {
        "host": socket.gethostname(), "python": platform.python_version(), "torch": torch.__version__,
        "cuda_build": torch.version.cuda or "-", "cudnn": str(torch.backends.cudnn.version() or "-") if cuda else "-",
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else "-",
        "driver": _driver_version() if cuda else "-", "cpu_cores": cores, "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
        "device_key": device_key(),
    }
    if cuda:
        facts["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return facts


def _row(target: str, check: str, ok: Optional[bool], figure: str = "", detail: str = "", fix: str = "") -> dict:
    return {"target": target, "check": check, "ok": ok, "figure": figure, "detail": detail[:600], "fix": fix}


def environment_rows(packages: dict[str, str]) -> list[dict]:
    """The environment row, and one row on the packages of the submitting side against the node's."""
    facts = environment()
    rows = [_row("node", "environment", True, facts["device_key"], ", ".join(f"{k} {v}" for k, v in facts.items()))]
    if packages:
        here = installed_versions()
        differ = {name: (version, here.get(name, "-")) for name, version in sorted(packages.items())
                  if here.get(name, "-") != version}
        rows.append(_row("node", "packages", not differ, f"{len(packages) - len(differ)}/{len(packages)} equal",
                         "; ".join(f"{name}: submitted with {a}, node has {b}" for name, (a, b) in differ.items()),
                         "install the submitting side's versions on the nodes (the same environment)" if differ
                         else ""))
    return rows


def _data_rows(target: PreflightTarget, limit: int) -> tuple[list[dict], bool]:
    """The data folder read through the worker's loader; the decode/augment rate per CPU core."""
    from workers.data.datasets import load_split
    from workers.data.image_folder import LazyImages

    started = time.perf_counter()
    try:
        data = load_split(target.dataset)
    except Exception as error:  # noqa: BLE001 (any failure to read the data is the check's finding)
        return [_row(target.label, "data", False, "", f"{type(error).__name__}: {error}",
                     "make the data folder readable from the compute nodes at the same path (a shared file "
                     "system), or point dataset.root at a copy there")], False
    images = data.train_images
    if not isinstance(images, LazyImages):
        return [_row(target.label, "data", True, f"{images.shape[0]:,} images in memory",
                     f"loaded in {time.perf_counter() - started:.2f} s")], True
    count = len(images)
    positions = sorted({round(i * (count - 1) / max(1, min(limit, count) - 1)) for i in range(min(limit, count))})
    started = time.perf_counter()
    for position in positions:
        try:
            images.train_view(position, position)
        except Exception as error:  # noqa: BLE001
            return [_row(target.label, "data", False, "", f"{images.root / images.files[position]}: "
                         f"{type(error).__name__}: {error}",
                         "replace or remove the unreadable image (the stages would fail on it)")], False
    rate = len(positions) / (time.perf_counter() - started)
    return [_row(target.label, "data", True, f"{rate:,.0f} images/s per core",
                 f"{len(positions)} of {count:,} training images decoded and augmented on one core")], True


def _run_steps(folder: Path, order: dict[str, Any]) -> dict[str, Any]:
    """One phase of :mod:`workers.stages.preflight_steps` in a fresh single-rank process."""
    folder.mkdir(parents=True, exist_ok=True)
    order_name, log_name, result_name = preflight_phase_files(order["phase"])
    order_file = folder / order_name
    atomic_write_json(order_file, order)
    environ = {name: value for name, value in os.environ.items() if name not in _RANK_VARIABLES}
    root = str(Path(__file__).resolve().parents[2])  # the worker code this stage runs (a job's snapshot)
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environ.get("PYTHONPATH")]))
    log_file, result_file = folder / log_name, folder / result_name
    result_file.unlink(missing_ok=True)  # an earlier attempt's report is not this one's
    with open_regular(log_file) as log:
        done = subprocess.run([sys.executable, "-m", "workers.stages.preflight_steps", str(order_file)],
                              stdout=log, stderr=subprocess.STDOUT, env=environ, check=False)
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return {"error": f"the process was killed by {name}" + (
            " (out of memory: the job's memory limit or the node's)" if name == "SIGKILL" else ""), "signal": name}
    if not result_file.exists():
        return {"error": f"exited {done.returncode} without a report: {read_tail(log_file)[-600:]}"}
    return read_json(result_file)


def _training_rows(target: PreflightTarget, config: PreflightConfig, folder: Path, world: int
                   ) -> tuple[list[dict], int]:
    """Training steps under the smallest mask, then a resume in a fresh process; the rows and the
    largest batch per device that fitted."""
    batch = max(1, math.ceil(int(target.recipe["batch_size"]) / world))  # what one device holds
    order: dict[str, Any] = {"target": target.model_dump(), "steps": config.steps, "phase": "train", "batch": batch}
    report = _run_steps(folder, order)
    killed: list[int] = []
    while report.get("signal") == "SIGKILL" and int(order["batch"]) > 1:  # killed for memory: try half the batch
        killed.append(int(order["batch"]))
        order["batch"] = int(order["batch"]) // 2
        report = _run_steps(folder, order)
    if killed and "error" not in report:
        report["too_large"] = killed + list(report.get("too_large", []))
    if "error" in report:
        return [_row(target.label, "training steps", False, "", report["error"], "")], int(order["batch"])
    rows = []
    if report.get("too_large"):
        rows.append(_row(target.label, "memory", False, f"batch {report['batch']} per device fits",
                         f"batch {batch} per device does not fit ({'; '.join(map(str, report['too_large']))} tried)",
                         f"a recipe.batch_size of at most {report['batch'] * world} over {world} rank(s), "
                         "or more ranks, or a device with more memory"))
    loss = report["loss"]
    finite = isinstance(loss, float) and math.isfinite(loss)
    rows.append(_row(target.label, "training steps", finite, f"loss {loss:.4f}" if finite else f"loss {loss}",
                     f"{report['iterations']} steps of batch {report['batch']} on {report['device']}",
                     "" if finite else "a smaller recipe.lr, or check the data's normalisation"))
    rows.append(_row(target.label, "mask exact", report["pruned_nonzero"] == 0,
                     f"{report['kept'] / report['total']:.3g} kept",
                     f"{report['pruned_nonzero']} of {report['total'] - report['kept']:,} pruned weights non-zero "
                     f"after the steps", "" if report["pruned_nonzero"] == 0 else "report this as a bug"))
    resumed = _run_steps(folder, {**order, "phase": "resume", "batch": report["batch"]})
    if "error" in resumed:
        rows.append(_row(target.label, "checkpoint resume", False, "", resumed["error"], ""))
        return rows, int(report["batch"])
    within = resumed["identical"] or resumed["relative_difference"] <= resumed["tolerance"]
    figure = "bit-identical" if resumed["identical"] else f"max diff {resumed['max_difference']:.3g}"
    tolerance = ("bit-identical required on the CPU" if resumed["tolerance"] == 0 else
                 f"tolerance {resumed['tolerance']:g} of the largest weight (cuDNN is not bit-exact across processes)")
    rows.append(_row(target.label, "checkpoint resume", within, figure,
                     f"next step after resuming in a fresh process; {tolerance}",
                     "" if within else "set PRUNESWEEP_DETERMINISTIC=1, or report this as a bug"))
    return rows, int(report["batch"])


def _ranks_rows(target: PreflightTarget, config: PreflightConfig, per_device: int) -> list[dict]:
    """Steady-state samples/s per device over this stage's ranks (DDP when more than one) at ``per_device``
    images per device, and the parameters compared across ranks afterwards."""
    import torch

    from workers.stages.preflight_steps import _first_images, _mask, _network
    from workers.training import distributed
    from workers.training.device import pick_device
    from workers.training.loop import train

    ranks = distributed.current()
    world = ranks.world_size if ranks else 1
    batch = per_device * world
    warm, timed = max(1, config.timed_steps // 2), config.timed_steps
    seconds = []
    for steps in (warm, warm + timed):
        _, task, model = _network(target.model_dump())
        mask = _mask(model, target.fraction, target.seed)
        data = task.prepare(load_split_on_device(target), target.task_options or {})
        data = _first_images(data, steps * batch)
        recipe = {**target.recipe, "epochs": 1, "batch_size": batch}
        distributed.barrier()
        if pick_device().type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        train(model, task, data, recipe, target.seed, mask=mask, stop_at_iteration=steps)
        if pick_device().type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    rate = timed * batch * target.views / max(seconds[1] - seconds[0], 1e-9) / world
    rows = [_row(target.label, "throughput", True, f"{rate:,.0f} samples/s per device",
                 f"{timed} steps of batch {batch} x {target.views} view(s) over {world} rank(s), after {warm} "
                 "warm-up steps")]
    if ranks is None:
        rows.append(_row(target.label, "distributed", None, "1 rank", "the stage runs in one process"))
        return rows
    try:
        distributed.check_identical(dict(model.named_parameters()), "weights")
    except RuntimeError as error:
        rows.append(_row(target.label, "distributed", False, f"{world} ranks", str(error),
                         "check that every rank runs the same code and packages"))
    else:
        backend = "NCCL" if torch.cuda.is_available() else "gloo"
        rows.append(_row(target.label, "distributed", True, f"{world} ranks ({backend})",
                         "parameters identical on every rank after the timed steps"))
    return rows


def _on_every_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank of the stage (``flag`` itself in one process)."""
    from workers.training import distributed

    if distributed.current() is None:
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([int(flag)], device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def load_split_on_device(target: PreflightTarget):
    """The target's dataset on this rank's training device."""
    from workers.data.datasets import load_split
    from workers.training.device import pick_device

    return load_split(target.dataset, pick_device())


def run_preflight(ctx: StageContext[PreflightConfig]) -> StageOutcome:
    """Run every check of every target; write ``preflight.json``; never raise for a failed check."""
    from workers.training import distributed

    ranks = distributed.current()
    world = ranks.world_size if ranks else 1
    writer = distributed.is_writer()
    rows = environment_rows(ctx.config.packages) if writer else []
    for index, target in enumerate(ctx.config.targets):
        data_rows, readable = _data_rows(target, ctx.config.decode_images)  # every rank reads the data
        readable = _on_every_rank(readable)
        rows += data_rows if writer else []
        if not readable:
            continue
        per_device = max(1, math.ceil(int(target.recipe["batch_size"]) / world))
        if writer:
            try:
                found, per_device = _training_rows(target, ctx.config, ctx.stage_dir / f"target-{index}", world)
                rows += found
            except Exception as error:  # noqa: BLE001
                rows.append(_row(target.label, "training steps", False, "", f"{type(error).__name__}: {error}"))
        per_device = distributed.broadcast_from_writer(per_device)  # the batch that fitted, on every rank
        try:
            found = _ranks_rows(target, ctx.config, per_device)
        except Exception as error:  # noqa: BLE001
            found = [_row(target.label, "throughput", False, "", f"{type(error).__name__}: {error}")]
        rows += found if writer else []
    failed = sum(row["ok"] is False for row in rows)
    report = {"environment": environment() if writer else {}, "rows": rows}
    atomic_write_json(ctx.stage_dir / PREFLIGHT_RESULT_FILE, report)
    return StageOutcome([PREFLIGHT_RESULT_FILE], {"passed": failed == 0, "checks": len(rows), "failed": failed})
