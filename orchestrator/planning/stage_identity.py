"""Stage identity: what a stage is, and the short hash that names it on disk.

A stage's key hashes only its *identity*: the settings it depends on, with
default-valued settings left out and dependencies referred to by their own keys. Adding
an option (with a default that keeps old behaviour) or an unrelated grid axis therefore
never renames an existing stage. ``tests/unit/test_stage_keys.py`` pins the keys.

What of a stage's config is its identity is declared on the kind's config model, the one the
worker parses ``stage.json`` with (``identity_fields``: :mod:`workers.stages.contract`,
:mod:`workers.stages.identity`); :meth:`Stage.planned` builds both from values given once.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from workers.stages.identity import plan_stage
from workers.stages.registry import STAGE_KINDS

KEY_LENGTH = 12


def canonical_json(obj: Any) -> str:
    """The one textual form of a JSON-able value that is hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def stage_key(kind: str, identity: Mapping[str, Any]) -> str:
    """``<kind>-<first 12 hex of sha256(canonical identity)>``."""
    digest = hashlib.sha256(canonical_json({"kind": kind, **identity}).encode()).hexdigest()
    return f"{kind}-{digest[:KEY_LENGTH]}"


@dataclass(frozen=True)
class Stage:
    """One unit of work: a pure function of ``config`` and the artifacts of ``deps``."""

    kind: str
    identity: Mapping[str, Any]
    config: Mapping[str, Any]
    #: role -> key of the stage whose artifacts this one reads.
    deps: Mapping[str, str] = field(default_factory=dict)
    #: a short human description, e.g. ``imp labels seed=0 k=0 level=3``.
    label: str = ""
    #: epochs of training this stage runs (0 for a random mask).
    epochs: float = 0

    @classmethod
    def planned(cls, kind: str, *, refs: Optional[Mapping[str, Any]] = None, deps: Optional[Mapping[str, str]] = None,
                label: str = "", epochs: float = 0, **fields: Any) -> Stage:
        """A stage of ``kind`` whose config and identity follow from ``fields`` by the kind's config model
        (:func:`workers.stages.identity.plan_stage`); ``refs``: the keys of the stages its identity names."""
        identity, config = plan_stage(STAGE_KINDS[kind].config_model(), refs, **fields)
        return cls(kind, identity, config, deps=dict(deps or {}), label=label, epochs=epochs)

    @property
    def key(self) -> str:
        """The stage's stable name."""
        return stage_key(self.kind, self.identity)

    @property
    def is_training(self) -> bool:
        """Whether the stage trains a network."""
        return self.epochs > 0

    def to_json(self) -> dict:
        """The content of the stage's ``stage.json``."""
        return copy.deepcopy({
            "kind": self.kind,
            "key": self.key,
            "label": self.label,
            "identity": dict(self.identity),
            "config": dict(self.config),
            "deps": dict(self.deps),
        })


@dataclass(frozen=True)
class Cell:
    """One cell of the grid: a mask source x init x rewind point x fraction x seed.

    A transfer evaluation's cell has the init ``pretrained`` (it starts from the trained
    network of the IMP level itself, neither rewound nor re-initialised) and says how it
    evaluates it in ``transfer``: ``linear``, ``finetune`` or ``finetune_prune_during``.
    """

    mask_source: str
    init: str
    rewind: str
    rewind_iteration: Optional[int]
    nominal_fraction: float
    level: Optional[int]
    seed: int
    #: the stage whose metrics hold this cell's top-1.
    stage_key: str
    #: how a transfer evaluation evaluates the network; None on the pruning grid.
    transfer: Optional[str] = None
