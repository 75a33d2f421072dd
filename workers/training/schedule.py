"""Learning-rate schedules as pure functions of the optimizer step (no torch needed).

Because the learning rate depends only on the number of steps already taken, the
schedule has no state to checkpoint besides that count, and a replay that stops early
(the rewind stage) follows exactly the same learning rates as the full training.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

SCHEDULE_KINDS = ("constant", "step", "cosine")


def iterations_per_epoch(train_size: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: every image once, the last batch may be smaller."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    return math.ceil(train_size / batch_size)


def validate_schedule(schedule: Mapping | None) -> dict:
    """Return the schedule with its defaults filled in; raise ``ValueError`` if malformed."""
    spec: dict[str, Any] = {"kind": "constant", "milestones": [], "gamma": 0.1, "warmup_epochs": 0}
    spec.update(dict(schedule or {}))
    if spec["kind"] not in SCHEDULE_KINDS:
        raise ValueError(f"schedule.kind must be one of {SCHEDULE_KINDS}, got {spec['kind']!r}")
    if spec["warmup_epochs"] < 0:
        raise ValueError(f"schedule.warmup_epochs must be >= 0, got {spec['warmup_epochs']}")
    spec["milestones"] = sorted(int(m) for m in spec["milestones"])
    return spec


def learning_rate_at(base_lr: float, schedule: Mapping | None, iteration: int,
                     steps_per_epoch: int, total_epochs: int) -> float:
    """Learning rate of the optimizer step that follows ``iteration`` steps already taken.

    - ``constant``: ``base_lr``;
    - ``step``: ``base_lr * gamma ** (number of milestones <= current epoch)``; the drop
      happens at the epoch boundary;
    - ``cosine``: cosine annealing from ``base_lr`` to 0 over the steps after warmup.

    A linear warmup over ``warmup_epochs`` (in steps) applies to every kind.
    """
    spec = validate_schedule(schedule)
    warmup_steps = int(round(spec["warmup_epochs"] * steps_per_epoch))
    if iteration < warmup_steps:
        return base_lr * (iteration + 1) / warmup_steps
    if spec["kind"] == "constant":
        return base_lr
    if spec["kind"] == "step":
        epoch = iteration // steps_per_epoch
        drops = sum(1 for milestone in spec["milestones"] if milestone <= epoch)
        return base_lr * spec["gamma"] ** drops
    total_steps = total_epochs * steps_per_epoch
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(iteration - warmup_steps, 0) / span, 1.0)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
