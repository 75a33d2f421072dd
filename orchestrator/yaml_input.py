"""Reading YAML that a user wrote: strict UTF-8, no duplicate keys, bounded depth and size.

PyYAML's ``safe_load`` already refuses to build arbitrary objects; on top of it a sweep file
(or an override's value) is refused when it is not UTF-8 text, when a mapping names a key
twice (the later value silently winning hides mistakes), when it nests deeper than
:data:`MAX_DEPTH`, or when it expands (through aliases) to more than :data:`MAX_NODES` values.
"""
from __future__ import annotations

from typing import Any

import yaml

#: the deepest nesting a sweep needs is about 5 (ray.resources.<kind>.custom.<name>).
MAX_DEPTH = 32
#: values after alias expansion; the paper's largest sweep has a few hundred.
MAX_NODES = 100_000


class YamlInputError(ValueError):
    """A YAML text that is not acceptable; the message says where ("line L, column C") when known."""


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys in a mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges, it is not a key
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping below says so
            if first is not None:
                raise YamlInputError(f"{_where(key_node.start_mark)}: duplicate key {key!r} (first at "
                                     f"{_where(first)}); each key may appear once in a mapping")
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _check_shape(value: Any) -> None:
    """Refuse values nested deeper than MAX_DEPTH or larger than MAX_NODES (aliases counted each time)."""
    stack, nodes = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise YamlInputError(f"more than {MAX_NODES} values (after expanding aliases)")
        if depth > MAX_DEPTH:
            raise YamlInputError(f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def load_yaml(data: bytes | str) -> Any:
    """The value a YAML document holds; :class:`YamlInputError` when it is not acceptable."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise YamlInputError(f"not UTF-8 text (byte {error.start} is {data[error.start]:#04x})") from None
    try:
        value = yaml.load(data, Loader=_StrictLoader)  # a SafeLoader subclass: builds plain data only
    except YamlInputError:
        raise
    except RecursionError:
        raise YamlInputError(f"nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = " ".join(str(getattr(error, "problem", None) or error).split())  # one line
        where = f"{_where(mark)}: " if mark is not None else ""
        raise YamlInputError(f"YAML syntax error: {where}{problem}") from None
    _check_shape(value)
    return value
