"""Mask rules: how a stage gets the mask it trains or evaluates with.

A rule is a dict with a ``kind``:

- ``{"kind": "full"}``: keep every prunable weight;
- ``{"kind": "prune_round", "rate": r, "scope": "global"}``: one global magnitude round
  on the ``previous`` stage's ``final.pt``, starting from its ``mask.pt`` (a dense stage
  has none: the full mask);
- ``{"kind": "one_shot", "fraction": f, "scope": "global"}``: keep the ``round(f*total)``
  largest weights of the ``previous`` stage's ``final.pt``;
- ``{"kind": "given"}``: the ``mask`` stage's ``mask.pt``;
- ``{"kind": "random", "keep": {"rate": r, "level": L}}`` or ``{"keep": {"fraction": f}}``:
  as many weights as L rounds at rate r (or ``round(f*total)``) kept uniformly at
  random, the permutation seeded by ``derive_seed(seed, "random_mask")``;
- ``{"kind": "adjusted_random", "keep": {...}}``: as ``random``, but the weights of the
  ``previous`` (dense) stage's ``final.pt`` that are exactly zero are pruned first.

Each kind is registered in :mod:`workers.pruning.rule_kinds` (torch-free) with its function here.
Any rule but ``full`` and ``given`` may carry ``"layers": n``: only the first ``n``
convolutions are pruned (the layer-wise experiment); the other prunable weights are
all kept and the counts (``keep``, ``fraction``) are over the pruned layers only.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.pruning.masks import (
    Mask,
    adjusted_random_mask,
    check_mask,
    count,
    first_conv_names,
    full_mask,
    kept_after_rounds,
    prune_global_round,
    prune_one_shot,
    random_mask,
)
from workers.pruning.rule_kinds import mask_rule_function
from workers.stages.paths import DONE_FILE, FINAL_FILE, MASK_FILE
from workers.stages.workspace_files import read_json, reading
from workers.training.checkpoints import save_state_dict
from workers.training.seeds import derive_seed

SCOPES = ("global",)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a saved dict of tensors (state dict or mask) onto the CPU."""
    with reading(path) as handle:  # never through a link, never waiting on a FIFO
        return torch.load(handle, map_location="cpu", weights_only=True)


def save_mask(path: Path, mask: Mapping[str, torch.Tensor]) -> None:
    """Atomically save a mask (bool tensors, contiguous)."""
    save_state_dict(path, {name: keep.contiguous() for name, keep in mask.items()})


def stage_lists(stage_dir: Path, name: str) -> bool:
    """True when a (done) stage's ``DONE.json`` lists the artifact ``name``."""
    manifest = read_json(Path(stage_dir) / DONE_FILE)
    return name in manifest.get("files", {})


def _dependency(deps: Mapping[str, Path], role: str, rule_kind: str) -> Path:
    if role not in deps:
        raise ValueError(f"mask rule {rule_kind!r} needs a {role!r} dependency; "
                         f"this stage has {sorted(deps)}")
    return Path(deps[role])


def _check_scope(rule: Mapping[str, Any]) -> None:
    scope = rule.get("scope", "global")
    if scope not in SCOPES:
        raise ValueError(f"mask rule {rule['kind']!r}: scope {scope!r} is not supported; "
                         f"only {SCOPES} is")


def previous_mask(model: nn.Module, previous_dir: Path) -> Mask:
    """The mask a previous stage trained with: its ``mask.pt``, or the full mask if it has none."""
    if stage_lists(previous_dir, MASK_FILE):
        return check_mask(model, load_tensors(Path(previous_dir) / MASK_FILE))
    return full_mask(model)


def random_keep_count(keep: Mapping[str, Any], total: int) -> int:
    """How many weights a random rule keeps: ``{"rate", "level"}`` or ``{"fraction"}``."""
    if "fraction" in keep and not {"rate", "level"} & set(keep):
        return int(round(float(keep["fraction"]) * total))
    if {"rate", "level"} == set(keep):
        return kept_after_rounds(total, float(keep["rate"]), int(keep["level"]))
    raise ValueError(f"random mask rule: keep must be {{'rate': r, 'level': L}} or "
                     f"{{'fraction': f}}, got {dict(keep)!r}")


def pruned_names(rule: Mapping[str, Any], model: nn.Module) -> list[str]:
    """The prunable weights ``rule`` prunes: the first ``rule["layers"]`` convolutions, else all."""
    layers = rule.get("layers") if isinstance(rule, Mapping) else None
    return first_conv_names(model, None if layers is None else int(layers))


def derive_mask(rule: Mapping[str, Any], model: nn.Module, deps: Mapping[str, Path],
                seed: int) -> Mask:
    """The mask ``rule`` gives for ``model`` from the (verified) dependency folders ``deps``."""
    kind = rule.get("kind") if isinstance(rule, Mapping) else None
    return mask_rule_function(kind)(rule, model, deps, seed)


def full_rule(rule: Mapping[str, Any], model: nn.Module, deps: Mapping[str, Path], seed: int) -> Mask:
    """``full``: every prunable weight kept."""
    return full_mask(model)


def given_rule(rule: Mapping[str, Any], model: nn.Module, deps: Mapping[str, Path], seed: int) -> Mask:
    """``given``: the ``mask`` dependency's ``mask.pt``."""
    source = _dependency(deps, "mask", rule["kind"])
    return check_mask(model, load_tensors(source / MASK_FILE))


def prune_round_rule(rule: Mapping[str, Any], model: nn.Module, deps: Mapping[str, Path], seed: int) -> Mask:
    """``prune_round``: one global magnitude round on the ``previous`` stage, from its mask."""
    _check_scope(rule)
    names = pruned_names(rule, model)
    previous = _dependency(deps, "previous", rule["kind"])
    weights = load_tensors(previous / FINAL_FILE)
    start = previous_mask(model, previous)
    pruned = prune_global_round(weights, {n: start[n] for n in names}, float(rule["rate"]))
    return check_mask(model, {**start, **pruned})


def one_shot_rule(rule: Mapping[str, Any], model: nn.Module, deps: Mapping[str, Path], seed: int) -> Mask:
    """``one_shot``: the ``round(f*total)`` largest weights of the ``previous`` stage."""
    _check_scope(rule)
    names = pruned_names(rule, model)
    previous = _dependency(deps, "previous", rule["kind"])
    weights = load_tensors(previous / FINAL_FILE)
    return check_mask(model, {**full_mask(model), **prune_one_shot(weights, float(rule["fraction"]), names=names)})


def random_rule(rule: Mapping[str, Any], model: nn.Module, deps: Mapping[str, Path], seed: int) -> Mask:
    """``random`` and ``adjusted_random``: a seeded draw of as many weights as ``keep`` says."""
    names = pruned_names(rule, model)
    mask = full_mask(model)
    _, total = count({n: mask[n] for n in names})
    keep_count = random_keep_count(rule.get("keep", {}), total)
    if rule["kind"] == "adjusted_random":
        weights = load_tensors(_dependency(deps, "previous", rule["kind"]) / FINAL_FILE)
        drawn = adjusted_random_mask(weights, names, keep_count, derive_seed(seed, "random_mask"))
    else:
        shapes = {n: mask[n].shape for n in names}
        drawn = random_mask(shapes, keep_count, derive_seed(seed, "random_mask"))
    return check_mask(model, {**mask, **drawn})
