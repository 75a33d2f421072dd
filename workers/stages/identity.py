"""What of a stage's config is its identity: declared on each kind's config model, as exca declares
what a config leaves out of its uid.

A kind's config model (:mod:`workers.stages.contract`) names in ``identity_fields`` the fields its
key hashes, each with a :class:`Key` saying how; every other field is the stage's config alone (where
its data lives, what it captures, the level shown to people). The planner builds a stage with
:func:`plan_stage`: each value is given once, and the config (what ``stage.json`` holds and the
worker parses with the same model) and the identity (what ``orchestrator.planning.stage_identity``
hashes into the key) both follow from it. Besides the fields, an identity holds the keys of the
stages it derives from (``refs``: a dense run, the previous IMP level, the mask), which are no
part of the config: the worker reads those stages' folders as its dependencies.

A nested setting (dataset, arch, recipe, target, mask rule) is handed over as a :class:`Setting`:
the whole value for the config, and its identity form with the values at their defaults left out
(the sweep file's models own the defaults: ``model_dump(exclude_defaults=True)``), so that adding
an option with a default never renames a stage. Torch-free and import-light: the planner imports it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

_ALWAYS = object()


@dataclass(frozen=True)
class Key:
    """How one config field enters the identity."""

    #: its name there (the field's own by default).
    name: Optional[str] = None
    #: left out of the identity at this value (a setting added later, at the value that kept old keys).
    omit: Any = _ALWAYS
    #: its entries go into the identity one by one (``task_options``' labelled subset, a mask rule's settings).
    spread: bool = False
    #: keys of the value that say where it lives, not what it is (a dataset's ``root``): never hashed.
    leave_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Setting:
    """A value handed to :func:`plan_stage` with an identity form of its own: ``value`` goes into the config,
    ``identity`` (its defaults left out) into the identity."""

    value: Any
    identity: Any


def plan_stage(model: Any, refs: Optional[Mapping[str, Any]] = None,
               **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(identity, config)`` of a stage whose config model is ``model`` (a
    :class:`~workers.stages.contract.StageConfig` subclass, which imports this module), from its ``fields`` (plain
    values or :class:`Setting`) and the keys of the stages it derives from (``refs``). The config is
    validated by ``model`` (exact keys, JSON types) and holds exactly the fields given."""
    values = {name: given.value if isinstance(given, Setting) else given for name, given in fields.items()}
    model.model_validate(values)  # strict: what validates is the config as given, nothing coerced
    identity: dict[str, Any] = dict(refs or {})
    for name, key in model.identity_fields.items():
        if name not in fields:
            continue
        given = fields[name]
        value = given.identity if isinstance(given, Setting) else given
        if key.omit is not _ALWAYS and value == key.omit:
            continue
        if key.leave_out:
            value = {k: v for k, v in value.items() if k not in key.leave_out}
        if key.spread:
            identity.update(value or {})
        else:
            identity[key.name or name] = value
    return identity, values
