r"""A valid/invalid decision for the manifest schema, compiled into closures, that remembers its answers
for repeated leaf values.

Explaining a rejection stays with jsonschema (schema.py); this only decides, and decides as jsonschema's
Draft 2020-12 validator does (with the schema's ECMA-262 `$`), for the keywords the manifest schema uses.
A schema with any other keyword compiles to None, and schema.py falls back to fastjsonschema.

Why not fastjsonschema alone: its generated code costs about 30 µs per instance document (a set of keys
and an isinstance per keyword, per field), which is a quarter of a 50,000-instance load. Most leaf
values repeat across a tree's documents ("512M", "qcow2", "bridge"), and a leaf's verdict depends on its
value alone, so each leaf schema here keeps its verdicts by (type, value): the second "512M" costs one
dict lookup. tests/manifest/test_schemacheck.py holds this to jsonschema's verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

MAX_REMEMBERED = 4096  # verdicts kept per leaf schema (names and paths are all different: bounded)

# Annotations, and the keywords compiled below.
_IGNORED = frozenset({"description", "examples", "default", "title", "$id", "$schema", "$defs", "$comment"})
_LEAF = frozenset({"type", "enum", "const", "pattern", "minLength", "maxLength", "minimum", "maximum",
                   "exclusiveMinimum", "exclusiveMaximum"})
_CONTAINER = frozenset({"properties", "additionalProperties", "required", "propertyNames", "maxProperties",
                        "items", "maxItems", "minItems"})
_APPLICATORS = frozenset({"$ref", "allOf", "if", "then"})
_SUPPORTED = _IGNORED | _LEAF | _CONTAINER | _APPLICATORS


class _Unsupported(Exception):
    pass


def _is_number(value: Any) -> bool:
    return (type(value) is int or type(value) is float) and not isinstance(value, bool)


# JSON types as the types of parsed YAML (exact types: True is a bool, not an int); jsonschema's
# integer is also a float without a fractional part (1.0), see _whole.
_PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "boolean": (bool,), "null": (type(None),), "object": (dict,), "array": (list,),
    "number": (int, float), "integer": (int,),
}


def _whole(value: float) -> bool:
    return math.isfinite(value) and value.is_integer()


def _equal(value: Any, wanted: Any) -> bool:
    """jsonschema's equality for enum and const: true and 1 differ, 1 and 1.0 do not."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value == wanted
    if _is_number(value) and _is_number(wanted):
        return bool(value == wanted)
    return type(value) is type(wanted) and bool(value == wanted)


def compile_schema(root: dict[str, Any], regex: Callable[[str], Any]) -> Check | None:
    """A function deciding whether a document is valid against `root`; None when `root` uses a keyword
    this module does not implement. `regex(pattern)` compiles a schema pattern (ECMA `$`)."""
    compiled: dict[str, Check] = {}

    def ref(target: str) -> Check:
        """A JSON pointer into this schema (`#/$defs/disk`, `#/$defs/instanceSpec/properties/node`)."""
        if not target.startswith("#/"):
            raise _Unsupported(target)
        if target not in compiled:
            found: Any = root
            for part in target[2:].split("/"):
                found = found[part.replace("~1", "/").replace("~0", "~")]
            compiled[target] = _pending  # while compiling it: a reference back to it waits for the result
            compiled[target] = node(found)
        check = compiled[target]
        return check if check is not _pending else (lambda v: compiled[target](v))

    def node(schema: Any) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict) or not set(schema) <= _SUPPORTED:
            raise _Unsupported(schema)
        parts = [part for part in (_leaf(schema, regex), _container(schema, node)) if part is not None]
        if "$ref" in schema:
            parts.append(ref(schema["$ref"]))
        parts += [node(sub) for sub in schema.get("allOf", ())]
        if "if" in schema and "then" in schema:
            condition, then = node(schema["if"]), node(schema["then"])
            parts.append(lambda v: not condition(v) or then(v))
        elif "then" in schema or "if" in schema:
            pass  # `if` alone or `then` alone asserts nothing
        return _all(parts)

    try:
        return node(root)
    except (_Unsupported, KeyError, TypeError):
        return None


def _all(checks: list[Check]) -> Check:
    """A check passed when all `checks` pass (nested `and`s: cheaper than all() over a generator)."""
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    first, rest = checks[0], _all(checks[1:])
    return lambda v: first(v) and rest(v)


def _always(value: Any) -> bool:
    return True


def _pending(value: Any) -> bool:
    raise AssertionError("a reference used while it was compiled")


def _never(value: Any) -> bool:
    return False


def _leaf(schema: dict[str, Any], regex: Callable[[str], Any]) -> Check | None:
    """The keywords that look at a value alone, with the verdicts remembered when there is no more."""
    if not set(schema) & _LEAF:
        return None
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or ())
    python_types = frozenset(t for name in names for t in _PYTHON_TYPES[name])
    whole_floats = "integer" in names and "number" not in names  # 1.0 is an integer too

    def type_ok(v: Any) -> bool:
        return not names or type(v) in python_types or (whole_floats and type(v) is float and _whole(v))

    if set(schema) <= {"type"} | _IGNORED | _CONTAINER | _APPLICATORS:  # the type alone: no verdicts to keep
        return type_ok
    values = _values(schema)
    strings = _strings(schema, regex)
    numbers = _numbers(schema)

    def check(v: Any) -> bool:
        if not type_ok(v) or not values(v):
            return False
        if type(v) is str:
            return strings(v)
        return not _is_number(v) or numbers(v)

    if set(schema) & (_CONTAINER | _APPLICATORS):
        return check
    remembered: dict[tuple[type, Any], bool] = {}

    def remembering(v: Any) -> bool:
        key = (type(v), v)
        try:
            verdict = remembered.get(key)
        except TypeError:  # a list or a mapping: nothing to remember it by
            return check(v)
        if verdict is None:
            verdict = check(v)
            if len(remembered) >= MAX_REMEMBERED:
                remembered.clear()
            remembered[key] = verdict
        return verdict

    return remembering


def _values(schema: dict[str, Any]) -> Check:
    """enum and const."""
    has_enum, has_const = "enum" in schema, "const" in schema
    enum, const = tuple(schema.get("enum", ())), schema.get("const")
    return lambda v: (not has_enum or any(_equal(v, e) for e in enum)) and (not has_const or _equal(v, const))


def _strings(schema: dict[str, Any], regex: Callable[[str], Any]) -> Check:
    """pattern, minLength and maxLength (on a string)."""
    pattern = regex(schema["pattern"]).search if "pattern" in schema else None
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength")
    return lambda v: ((pattern is None or pattern(v) is not None) and len(v) >= shortest
                      and (longest is None or len(v) <= longest))


def _numbers(schema: dict[str, Any]) -> Check:
    """minimum, maximum, exclusiveMinimum and exclusiveMaximum (on a number)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    above, below = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    return lambda v: ((low is None or v >= low) and (high is None or v <= high)
                      and (above is None or v > above) and (below is None or v < below))


def _container(schema: dict[str, Any], node: Callable[[Any], Check]) -> Check | None:
    """The keywords of objects and arrays (they say nothing about other values)."""
    if not set(schema) & _CONTAINER:
        return None
    mapping, sequence = _mapping(schema, node), _sequence(schema, node)
    return lambda v: mapping(v) if type(v) is dict else sequence(v) if type(v) is list else True


def _mapping(schema: dict[str, Any], node: Callable[[Any], Check]) -> Check:
    """properties, additionalProperties, propertyNames, required and maxProperties (on a mapping)."""
    properties = {key: node(sub) for key, sub in schema.get("properties", {}).items()}
    additional = node(schema["additionalProperties"]) if "additionalProperties" in schema else _always
    names = node(schema["propertyNames"]) if "propertyNames" in schema else None
    required = tuple(schema.get("required", ()))
    most = schema.get("maxProperties")
    named = tuple(properties.items())

    required_keys = frozenset(required)
    get = properties.get

    def present(v: dict[Any, Any]) -> bool:  # only the named properties can be wrong
        if not required_keys <= v.keys():
            return False
        for key, sub in named:
            if key in v and not sub(v[key]):
                return False
        return most is None or len(v) <= most

    def every(v: dict[Any, Any]) -> bool:
        if not required_keys <= v.keys():
            return False
        for key, value in v.items():
            if not get(key, additional)(value):
                return False
        return most is None or len(v) <= most

    def every_name(v: dict[Any, Any]) -> bool:
        return every(v) and names is not None and all(map(names, v))

    if names is not None:
        return every_name
    return present if additional is _always else every


def _sequence(schema: dict[str, Any], node: Callable[[Any], Check]) -> Check:
    """items, minItems and maxItems (on a list)."""
    items = node(schema["items"]) if "items" in schema else _always
    fewest, most = schema.get("minItems", 0), schema.get("maxItems")

    def check(v: list[Any]) -> bool:
        return len(v) >= fewest and (most is None or len(v) <= most) and all(map(items, v))

    return check
