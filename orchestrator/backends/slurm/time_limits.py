"""SLURM time limits derived from the measured throughput table, per stage kind.

When ``slurm.device`` names a device of ``orchestrator/planning/throughput.json`` (the partition's GPU
model, as the table spells it) and the table has the sweep's network and dataset on it, the
time limit of each kind is the longest of its stages' estimated durations (training samples
over the measured samples/s, :mod:`orchestrator.planning.gpu_hours`) times :data:`SAFETY_FACTOR`, plus
:data:`MARGIN_MIN` for start-up and evaluation, rounded up to whole minutes, and capped by the
partition's ``MaxTime`` (``scontrol show partition``) or ``slurm.max_time_min``. A kind the
sweep gives in ``slurm.time_min`` keeps that; a kind the table cannot estimate gets
``default_time_min``. ``plan`` prints the limits; ``launch`` writes them to
``WORKSPACE/slurm/time_limits.json`` so a later ``resume`` submits with the same ones.
"""
from __future__ import annotations

import math
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

#: the estimate is multiplied by this (a shared GPU, a slower node, data loading).
SAFETY_FACTOR = 1.5
#: minutes added to every derived limit: start-up, data loading, the final evaluation.
MARGIN_MIN = 10
#: where ``launch`` keeps the derived limits for ``resume``, inside the backend's log folder.
LIMITS_FILE = "time_limits.json"


@dataclass(frozen=True)
class TimeLimit:
    """One kind's limit in minutes and where it comes from."""

    minutes: int
    source: str  # "time_min", "derived", "default"
    why: str = ""


def parse_slurm_minutes(text: str) -> Optional[int]:
    """SLURM time syntax (``60``, ``30:00``, ``2:00:00``, ``1-12:00:00``, ``UNLIMITED``) in minutes (None: no limit)."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        return None
    days, first, second, third = match.groups()
    if days is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        return int(days) * 1440 + hours * 60 + minutes + math.ceil(seconds / 60)
    if third is not None:  # hours:minutes:seconds
        return int(first) * 60 + int(second) + math.ceil(int(third) / 60)
    if second is not None:  # minutes:seconds
        return int(first) + math.ceil(int(second) / 60)
    return int(first)


def partition_max_minutes(partition: Optional[str]) -> Optional[int]:
    """``MaxTime`` of the partition (the default one when None) in minutes, or None (unlimited or not reachable)."""
    try:
        output = subprocess.run(["scontrol", "show", "partition", "-o", *([partition] if partition else [])],
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = output.splitlines()
    chosen = next((line for line in lines if "Default=YES" in line), lines[0] if lines else "") \
        if not partition else (lines[0] if lines else "")
    match = re.search(r"\bMaxTime=(\S+)", chosen)
    return parse_slurm_minutes(match.group(1)) if match else None


def stage_seconds(spec, stage, rate: float, table: list[dict], device: str) -> Optional[float]:
    """Estimated training seconds of one stage on ``device`` (None: not a training stage, or not measured)."""
    from orchestrator.planning.gpu_hours import NOT_COUNTED, VIEWS, _train_images, measured_rate

    if stage.kind in NOT_COUNTED or not stage.epochs:
        return None
    config = stage.config
    if stage.kind == "finetune":
        target = config["target"]["name"]
        target_rate = measured_rate(spec.arch.name, target, device, table)
        images = _train_images(spec.transfer.dataset) if spec.transfer is not None else None
        return None if target_rate is None or images is None else stage.epochs * images / target_rate
    task = config.get("task", "labels")
    images = _train_images(spec.dataset)
    if images is None:
        return None
    if task == "labels_10pct":
        images = spec.labelled_subset_size() or max(1, round(spec.label_subset.fraction * images))
    return stage.epochs * images * VIEWS.get(task, 1) / rate


def derive(spec, plan, settings: Mapping[str, Any], table: Optional[list[dict]] = None,
           partition_max: Optional[int] = None) -> dict[str, TimeLimit]:
    """Kind -> its time limit for the sweep ``spec`` planned as ``plan`` under the SLURM ``settings``."""
    from orchestrator.planning.gpu_hours import measured_rate, table_for

    table = table_for(Path(spec.workspace)) if table is None else table
    explicit = dict(settings.get("time_min") or {})
    default = int(settings.get("default_time_min") or 60)
    device = str(settings.get("device") or "")
    cap = settings.get("max_time_min") or partition_max
    rate = measured_rate(spec.arch.name, spec.dataset.name, device, table) if device else None
    longest: dict[str, float] = {}
    for stage in plan.stages.values():
        seconds = stage_seconds(spec, stage, rate, table, device) if rate else None
        if seconds is not None:
            longest[stage.kind] = max(longest.get(stage.kind, 0.0), seconds)
    limits: dict[str, TimeLimit] = {}
    for kind in sorted({stage.kind for stage in plan.stages.values()}):
        if kind in explicit:
            limits[kind] = TimeLimit(int(explicit[kind]), "time_min", "slurm.time_min")
        elif kind in longest:
            minutes = math.ceil(longest[kind] * SAFETY_FACTOR / 60) + MARGIN_MIN
            why = f"longest stage ~{longest[kind] / 60:.1f} min on {device} x {SAFETY_FACTOR:g} + {MARGIN_MIN} min"
            if cap and minutes > cap:
                minutes, why = int(cap), f"{why}, capped by the partition's maximum {cap} min"
            limits[kind] = TimeLimit(minutes, "derived", why)
        else:
            why = ("slurm.default_time_min: " + (f"no measured throughput for {spec.arch.name} on "
                                                 f"{spec.dataset.name} on {device}" if device and not rate
                                                 else "set slurm.device to derive it" if not device
                                                 else "not a training stage"))
            limits[kind] = TimeLimit(default, "default", why)
    return limits


def describe(limits: Mapping[str, TimeLimit]) -> list[str]:
    """``plan``'s lines: one per kind."""
    return ["slurm time limits: " + ", ".join(f"{kind} {limit.minutes} min" for kind, limit in limits.items())] + [
        f"  {kind}: {limit.why}" for kind, limit in limits.items()]


def save_minutes(folder: Path, minutes: Mapping[str, int]) -> None:
    """Keep the derived limits (kind -> minutes) for later submissions of the workspace."""
    from workers.stages.artifacts import atomic_write_json

    atomic_write_json(Path(folder) / LIMITS_FILE, dict(minutes))


def load(folder: Path) -> dict[str, int]:
    """The derived limits a launch kept (kind -> minutes); empty when there are none."""
    try:
        from workers.stages.workspace_files import read_json

        saved = read_json(Path(folder) / LIMITS_FILE)
    except (OSError, ValueError):
        return {}
    return {str(kind): int(minutes) for kind, minutes in saved.items()
            if isinstance(minutes, int) and minutes > 0} if isinstance(saved, dict) else {}
