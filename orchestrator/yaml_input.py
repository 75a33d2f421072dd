"""Reading YAML that a user wrote: strict UTF-8, no duplicate keys, bounded depth and size.

PyYAML's ``safe_load`` already refuses to build arbitrary objects; on top of it a sweep file
(or an override's value) is refused when it is not UTF-8 text, when a mapping names a key
twice (the later value silently winning hides mistakes), when it nests deeper than
:data:`MAX_DEPTH`, or when it expands (through aliases) to more than :data:`MAX_NODES` values.

Numbers in exponent notation are read as YAML 1.2 reads them: ``1e-3``, ``5E4`` and ``1.0e5`` are
numbers (floats), where PyYAML's YAML 1.1 rules read them as text unless they hold a dot and a
signed exponent (``1.0e-3``).
"""
from __future__ import annotations

import re
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


#: the exponent forms of YAML 1.2's floats that YAML 1.1 leaves as text (no dot, or an unsigned exponent);
#: the forms with a dot and a signed exponent are YAML 1.1's floats already, and match the resolver before this one
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$")


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses duplicate keys in a mapping and reads YAML 1.2's exponent numbers."""

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


# a copy of SafeLoader's resolvers with this one appended: SafeLoader itself is left as it is
_StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+.0123456789"))


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
