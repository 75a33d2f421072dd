"""The files each stage kind must produce: what its ``DONE.json`` must list to count as done.

A manifest that lists fewer (a worker killed between writes of an older version, a hand-made
or truncated manifest) makes the stage not done, so it is rerun instead of feeding a missing
file to its dependents. Kinds registered elsewhere (extensions) need only ``metrics.json``,
which :func:`workers.stages.artifacts.manifest_problem` checks for every kind.

The names repeat the constants of :mod:`workers.pruning.rules`, :mod:`workers.training.loop` and
:mod:`workers.stages.transfer` (which import torch); ``tests/unit/test_damaged_workspaces.py`` checks
that they agree.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MASK = "mask.pt"
FINAL = "final.pt"
FEATURES = "features.pt"


def rewind_name(iteration: int) -> str:
    """The file of the weights captured after ``iteration`` optimizer steps (as workers.training.loop)."""
    return f"rewind_{int(iteration)}.pt"


def _integers(values: Any) -> list[int]:
    if not isinstance(values, list):
        return []
    return [value for value in values if type(value) is int]


def required_files(kind: Any, config: Any) -> set[str]:
    """The artifact names a stage of ``kind`` with ``config`` (its stage.json) must list, besides metrics.json."""
    config = config if isinstance(config, Mapping) else {}
    if kind == "dense":
        return {FINAL, *(rewind_name(k) for k in _integers(config.get("capture_iterations", [])))}
    if kind == "rewind":
        iteration = config.get("rewind_iteration")
        return {rewind_name(iteration)} if type(iteration) is int else set()
    if kind in ("imp", "eval", "finetune"):
        return {MASK, FINAL}
    if kind == "random_mask":
        return {MASK}
    if kind == "features":
        return {FEATURES}
    return set()
