"""Reading a sweep file: strict YAML, dotted command-line overrides, validation into one clear error."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from pydantic import ValidationError

from orchestrator.errors import SpecError
from orchestrator.spec.bounds import DEFAULT_MAX_STAGES
from orchestrator.spec.habits import as_list_where_expected, key_habit
from orchestrator.spec.messages import describe, shown, within
from orchestrator.spec.sweep import SweepSpec
from orchestrator.yaml_input import YamlInputError, load_yaml


def load_spec(path: Union[str, Path], overrides: Optional[list[str]] = None,
              max_stages: Optional[int] = DEFAULT_MAX_STAGES) -> SweepSpec:
    """Read, override and validate a sweep file; raise SpecError on any problem.

    A sweep that would plan more than ``max_stages`` stages is refused before anything is built.
    """
    path = Path(path)
    source = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(source, "", "no such sweep file") from None
    except OSError as err:
        raise SpecError(source, "", f"cannot read the file ({err.strerror})") from None
    if not data.strip():
        raise SpecError(source, "", "the file is empty; a sweep file is a mapping of keys (see sweeps/digits.yaml)")
    try:
        raw = load_yaml(data)
    except YamlInputError as err:
        raise SpecError(source, "", str(err)) from None
    if not isinstance(raw, dict):
        raise SpecError(source, "", f"the top level must be a mapping of keys, got {type(raw).__name__}")
    raw.setdefault("name", path.stem)
    overridden = {}
    for override in overrides or []:
        key_path = apply_override(raw, override, source)
        overridden[key_path] = override
    return validate_spec(raw, source, overridden, max_stages=max_stages)


def apply_override(raw: dict, override: str, source: str) -> str:
    """Apply one ``a.b.c=value`` override (value read as YAML) to ``raw`` in place.

    A single value where the schema takes a list is that one-element list (``mask_source=rotnet``);
    Hydra's forms (``seeds=0,1,2``, ``+key=v``, ``~key``) are refused naming the form to write.
    """
    key_path, _, text = override.partition("=")
    habit = key_habit(override)
    if habit:
        raise SpecError(source, key_path.strip(), f"override {shown(override)}: {habit}")
    if "=" not in override:
        raise SpecError(source, override, "an override must look like key.path=value (e.g. pruning.rate=0.5)")
    keys = key_path.strip().split(".")
    if not all(keys):
        raise SpecError(source, key_path, f"override {shown(override)}: empty key in the key path")
    try:
        value = load_yaml(text) if text.strip() else None
    except YamlInputError as err:
        raise SpecError(source, key_path, f"override {shown(override)}: the value is not valid YAML ({err})") from None
    value, habit = as_list_where_expected(keys, value, text)
    if habit:
        raise SpecError(source, ".".join(keys), f"override {shown(override)}: {habit}")
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            prefix = ".".join(keys[: depth + 1])
            raise SpecError(source, prefix,
                            f"override {shown(override)}: {prefix} is not a section, it holds {child!r}")
        node = child
    node[keys[-1]] = value
    return ".".join(keys)


def validate_spec(raw: dict, source: str, overridden: Optional[dict] = None,
                  max_stages: Optional[int] = None) -> SweepSpec:
    """Validate a raw mapping; turn the first pydantic error into a SpecError."""
    try:
        return SweepSpec.model_validate(raw, context={"max_stages": max_stages})
    except ValidationError as err:
        first = err.errors()[0]
        key_path, problem = describe(first)
        extra = len(err.errors()) - 1
        if extra:
            problem += f" (and {extra} more problem{'s' if extra > 1 else ''})"
        for override_key, override in (overridden or {}).items():
            if within(key_path, override_key) or within(override_key, key_path):
                problem += f" (from the command-line override {shown(override)})"
        raise SpecError(source, key_path, problem) from None
