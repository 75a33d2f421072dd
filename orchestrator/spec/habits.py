"""Habits researchers bring from Hydra to the command line, each answered with this tool's own form.

Hydra sweeps ``seeds=0,1,2`` in several runs (``-m``/``--multirun``), adds a key with ``+key=v``,
removes one with ``~key``, and some tools take ``--key=v``. Here a list in the sweep file is
already an axis of the sweep: ``seeds=[0,1,2]`` is one run of every seed, every key can be set as
``key=v``, and an override is written without dashes. A single value where the file takes a list
(``mask_source=rotnet``) is that one-element list.
"""
from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, Optional

from pydantic import BaseModel

from orchestrator.spec.sweep import SweepSpec

_MULTIRUN = ("-m", "--multirun")


def schema_type(keys: Sequence[str]) -> Any:
    """The type the sweep file's schema gives the value at ``keys`` (Optional left out); None where no key is."""
    annotation: Any = SweepSpec
    for key in keys:
        annotation = _required(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(key)
            if field is None:
                return None
            annotation = field.annotation
        elif typing.get_origin(annotation) is dict:  # recipes.<task>, local.ranks.<kind>, ...
            annotation = typing.get_args(annotation)[1]
        else:
            return None
    return _required(annotation)


def _required(annotation: Any) -> Any:
    """``X`` of ``Optional[X]``; anything else as it is."""
    members = typing.get_args(annotation)
    if len(members) == 2 and type(None) in members:
        return next(member for member in members if member is not type(None))
    return annotation


def key_habit(override: str) -> Optional[str]:
    """What to say of an override written in Hydra's ``+key=v``, ``++key=v`` or ``~key`` form; None otherwise."""
    stripped = override.strip()
    if stripped.startswith("+"):
        plus = stripped[:len(stripped) - len(stripped.lstrip("+"))]
        return f"Hydra's {plus!r} is not needed here (any key is set as key=value): write {stripped.lstrip('+')}"
    if stripped.startswith("~"):
        key = stripped.lstrip("~").partition("=")[0]
        return (f"Hydra's '~' (remove a key) has no counterpart here: leave {key} out of the sweep file for its "
                f"default, or set {key}=VALUE")
    return None


def as_list_where_expected(keys: Sequence[str], value: Any, text: str) -> tuple[Any, Optional[str]]:
    """An override's ``value`` (read from ``text``) where the schema takes a list at ``keys``: a single value
    becomes the one-element list; Hydra's comma form (``0,1,2``, read as text) gets the bracketed form to
    write instead, as the second item (the value then is left as it is)."""
    if typing.get_origin(schema_type(keys)) is not list or value is None or isinstance(value, (list, dict)):
        return value, None
    quoted = text.strip()[:1] in ("'", '"')
    if isinstance(value, str) and "," in value and not quoted:
        items = ",".join(item.strip() for item in value.split(","))
        return value, (f"a list is written in brackets: {'.'.join(keys)}=[{items}] (one run sweeps every value "
                       "of a list; there is no comma form)")
    return [value], None


def argument_habit(argument: str, takes_overrides: bool) -> Optional[str]:
    """What to say of a command-line ``argument`` argparse does not know, when it is a Hydra or ``--key=v``
    habit; None for any other."""
    if argument in _MULTIRUN:
        return (f"{argument}: there is no multirun flag: one launch already runs every value of every list "
                "in the sweep file (write seeds=[0,1,2], not seeds=0,1,2)")
    if takes_overrides and argument.startswith("--") and "=" in argument and len(argument.partition("=")[0]) > 2:
        return f"{argument}: an override is written without dashes: {argument[2:]}"
    return None
