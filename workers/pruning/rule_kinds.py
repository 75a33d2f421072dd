"""The registry of mask-rule kinds, torch-free: kind -> ``"module:function"`` deriving its mask.

The function is called as ``function(rule, model, deps, seed)`` and returns the mask
(see :mod:`workers.pruning.rules`, which holds the built-ins and documents each rule).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

MASK_RULE_KINDS: dict[str, str] = {
    "full": "workers.pruning.rules:full_rule",
    "prune_round": "workers.pruning.rules:prune_round_rule",
    "one_shot": "workers.pruning.rules:one_shot_rule",
    "given": "workers.pruning.rules:given_rule",
    "random": "workers.pruning.rules:random_rule",
    "adjusted_random": "workers.pruning.rules:random_rule",
}


def register_mask_rule(kind: str, function: str) -> None:
    """Register the mask-rule ``kind`` derived by ``function`` (``"module:function"``)."""
    if MASK_RULE_KINDS.get(kind, function) != function:
        raise ValueError(f"mask rule kind {kind!r} is already registered as {MASK_RULE_KINDS[kind]}")
    MASK_RULE_KINDS[kind] = function


def mask_rule_function(kind: Any) -> Callable[..., Any]:
    """The function deriving masks of rule ``kind``; ``ValueError`` naming the known kinds if unknown."""
    if kind not in MASK_RULE_KINDS:
        raise ValueError(f"unknown mask rule kind {kind!r}; known: {tuple(MASK_RULE_KINDS)}")
    module, _, name = MASK_RULE_KINDS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
