"""Turning pydantic's validation errors into one line: the key path and what is allowed there."""
from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from orchestrator.backends.settings_base import KeyedError as _KeyedError
from orchestrator.spec.sections import Recipe
from orchestrator.spec.sweep import SweepSpec
from results.hints import did_you_mean
from workers import catalog


def shown(override: str, limit: int = 80) -> str:
    """An override as an error message quotes it: cut to ``limit`` characters, so one line stays readable,
    and a URL's password hidden."""
    from results.central_db import shown as without_secrets

    override = without_secrets(override)
    return repr(override if len(override) <= limit else override[:limit] + "...")


def within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".") or path.startswith(prefix + "[")


def describe(error: ErrorDetails) -> tuple[str, str]:
    """The key path of a pydantic error and the problem there, in words (with the allowed word closest
    to a misspelt key or value, and the bracketed form of a single value where a list is asked)."""
    loc = list(error["loc"])
    context_error = (error.get("ctx") or {}).get("error")
    if isinstance(context_error, _KeyedError):
        loc += list(context_error.sub_path)
        return _format_loc(loc), _with_closest(context_error.message, loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return _format_loc(loc), f"unknown key{did_you_mean(str(loc[-1]), allowed)}; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        return _format_loc(loc), "required key is missing"
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    if kind not in ("value_error",) and "input" in error and not isinstance(error["input"], (dict, list)):
        message += f", got {error['input']!r}"
    if kind == "literal_error":
        message += did_you_mean(error.get("input"), re.findall(r"'([^']*)'", str((error.get("ctx") or {}).get(
            "expected", ""))))
    elif kind == "list_type" and isinstance(error.get("input"), (str, int, float)):
        message += f"; a list is written in brackets: [{error['input']}]"
    return _format_loc(loc), _with_closest(message, loc)


#: ``unknown WHAT 'WORD'; allowed: A, B`` (or ``unknown WHAT; allowed ...`` of a key): the refusals of a word
#: outside a known set, as the sections' validators word them.
_UNKNOWN = re.compile(r"^unknown [^';]*?(?: '(?P<word>[^']*)')?; allowed(?: here)?: (?P<allowed>[^;(]*)")


def _with_closest(message: str, loc: list) -> str:
    """``message`` with the allowed word closest to the one it refuses, when it refuses one of a known set."""
    match = _UNKNOWN.match(message)
    if not match or "(did you mean" in message:
        return message
    word = match["word"] if match["word"] is not None else str(loc[-1]) if loc else ""
    hint = did_you_mean(word, [item.strip() for item in match["allowed"].split(",")])
    at = message.index("; allowed")
    return message[:at] + hint + message[at:]


def _format_loc(loc: list) -> str:
    text = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a problem with a mapping's key, not its value
            continue
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _allowed_keys(loc: list) -> list[str]:
    """Field names of the model found by walking ``loc`` from the top of the spec."""
    model: Any = SweepSpec
    inside_recipes = False
    task = None  # the task a recipe of ``recipes`` trains (a transfer recipe has none)
    for part in loc:
        if isinstance(part, int):
            continue
        if inside_recipes:
            model, inside_recipes, task = Recipe, False, "labels" if part == "eval" else str(part)
            continue
        if model is SweepSpec and part == "recipes":
            inside_recipes = True
            continue
        if isinstance(model, _MappingOf):  # the part is a key of a dict of sections
            model = model.value
            continue
        annotation = getattr(model.model_fields.get(part), "annotation", None)
        optional = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(optional) == 1:  # Optional[Section]
            annotation = optional[0]
        if typing.get_origin(annotation) is dict:  # dict[str, Section]
            value = typing.get_args(annotation)[1]
            if isinstance(value, type) and issubclass(value, BaseModel):
                model = _MappingOf(value)
                continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    if model is Recipe:  # the task options a recipe of another task refuses are not allowed there
        return [key for key in model.model_fields
                if key not in catalog.TASK_RECIPE_OPTIONS or key in catalog.recipe_options(task or "")]
    return list(model.model_fields)


class _MappingOf(typing.NamedTuple):
    """While walking a key path: inside a ``dict[str, value]`` whose values are sections."""

    value: type
