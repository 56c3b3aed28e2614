r"""The manifest JSON Schema: finding it, checking documents against it, wording its errors.

`schemas/manifest.schema.json` (JSON Schema 2020-12) is the source of truth for the shape of a document;
editors use the same file. jsonschema's full validator is slow (about 0.2 ms per instance), so documents
first go through a compiled validity check (fastjsonschema, on a draft-07 view of the same schema) and
only the ones it rejects are explained by jsonschema. Both validators are built once, on first use.

The schema's `pattern`s are ECMA-262 regular expressions (editors check them in JavaScript), where `$`
matches only at the end of the text; in Python's `re` it also matches before a final newline, so
`machine: "pc\n"` would pass. Both validators here read `$` as `\Z` (fastjsonschema does so itself;
jsonschema's `pattern` keyword is replaced), and the schema avoids classes whose meaning differs
between the two (`\d`, `\w`, `\s`, `\b`); tests/manifest/test_schema_patterns.py holds them to it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler import usercache
from reconciler.manifest.problems import show
from reconciler.values import Value

SCHEMA_FILE = "manifest.schema.json"
SIZE_HINT = "a size like 512M or 2G"
DURATION_HINT = "a duration like 30s, 2m or 300ms"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class SchemaIssue(Value):
    """One schema violation: where (a path into the document) and what, worded for people."""

    path: tuple[str | int, ...]
    message: str
    missing: bool = False  # a required field is missing at `path`


def schema_path() -> str:
    """The schema file: packaged with the wheel (reconciler/schemas) or in a source checkout. (os.path,
    not pathlib, here and below: a `plan` never needs pathlib's import.)"""
    package_dir = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    for candidate in (os.path.join(package_dir, "schemas", SCHEMA_FILE),
                      os.path.join(os.path.dirname(package_dir), "schemas", SCHEMA_FILE)):
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{SCHEMA_FILE} is neither in {os.path.join(package_dir, 'schemas')} nor in "
                            "../schemas")


@functools.cache
def schema_text() -> str:
    with open(schema_path(), encoding="utf-8") as f:
        return f.read()


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


@functools.cache
def _full_validator() -> Any:
    import jsonschema  # slow import (~0.1 s): only when a document fails the fast check

    def pattern(validator: Any, wanted: str, instance: Any, _schema: Any) -> Iterable[Any]:
        if validator.is_type(instance, "string") and not ecma_regex(wanted).search(instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {wanted!r}")

    ecma = jsonschema.validators.extend(jsonschema.Draft202012Validator, {"pattern": pattern})
    return ecma(schema())


_DOLLAR = re.compile(r"(?<!\\)((?:\\\\)*)\$")  # a `$` not escaped by a backslash


@functools.cache
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """An ECMA-262 pattern (as the schema's are written) compiled with ECMA's `$`: the end of the text.

    A `$` inside a character class would be a literal in both languages; the schema has none."""
    return re.compile(_DOLLAR.sub(r"\1\\Z", pattern))


@functools.cache
def _fast_check() -> Callable[[Any], bool]:
    """A function that only decides valid/invalid, as fast as possible."""
    version = _fastjsonschema_version()
    if version is None:  # not installed: still correct, only slower
        validator = _full_validator()
        return validator.is_valid  # type: ignore[no-any-return]
    compiled = _compiled_fast_validator(version)

    def check(document: Any) -> bool:
        try:
            compiled(document)
        except _Rejected:
            return False
        except Exception as err:  # fastjsonschema's own, should a version generate its import differently
            if type(err).__module__.startswith("fastjsonschema"):
                return False
            raise
        return True

    return check


class _Rejected(Exception):
    """What the compiled check raises for an invalid document (in place of fastjsonschema's exceptions,
    so that running it needs no import of fastjsonschema)."""

    def __init__(self, message: str = "", *args: object, **kwargs: object) -> None:
        super().__init__(message)


class _NoDecimal:
    """Stands for decimal.Decimal in the generated code's number checks: parsed YAML holds no Decimal,
    so `isinstance(x, (int, float, Decimal))` means the same, and the decimal module stays unimported."""


_IMPORT_LINES = ("from fastjsonschema import JsonSchemaValueException, JsonSchemaValuesException\n",
                 "from decimal import Decimal\n")


def _fastjsonschema_version() -> str | None:
    """fastjsonschema's version, read from its version.py without importing the package (~5 ms, on
    every run); None when it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("fastjsonschema")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        with open(os.path.join(next(iter(spec.submodule_search_locations)), "version.py"),
                  encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    found = re.search(r"""^VERSION\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
    return found.group(1) if found else None


def _compiled_fast_validator(version: str) -> Callable[[Any], Any]:
    """fastjsonschema's validator, its byte code cached on disk.

    Generating and compiling the validator's ~270 KB of Python costs ~80 ms, more than the rest of a
    small `plan`; loading the marshalled code object costs ~3 ms. The cache key covers the schema's text
    (its SHA-256, by reconciler.digest: no OpenSSL; 0.1 ms), the fastjsonschema version and the Python
    version, not where the file lives: every checkout and install of one schema shares one entry. The
    entry starts with its key, so a stale entry is never used. The generated
    code's imports of fastjsonschema's exceptions and of Decimal are replaced (`_Rejected`, `_NoDecimal`): a
    cache hit imports nothing.
    """
    from reconciler import digest

    with open(schema_path(), "rb") as f:
        text_digest = digest.sha256_hex(f.read())
    key = f"{text_digest}\0{version}\0{sys.version}\0no-imports,lean\n".encode()
    code = usercache.load("schema-check", key)
    if code is None:
        import fastjsonschema

        draft7 = {k: v for k, v in schema().items() if k not in ("$schema", "$id")}
        draft7["$schema"] = "http://json-schema.org/draft-07/schema#"
        source = fastjsonschema.compile_to_code(draft7, use_default=False, use_formats=False)
        for line in _IMPORT_LINES:
            source = source.replace(line, "\n")
        code = compile(_lean(source), "<manifest schema check>", "exec")
        usercache.store("schema-check", key, code)
    namespace: dict[str, Any] = {"JsonSchemaValueException": _Rejected,
                                 "JsonSchemaValuesException": _Rejected, "Decimal": _NoDecimal}
    exec(code, namespace)
    validator: Callable[[Any], Any] = namespace["validate"]
    return validator


def _lean(source: str) -> Any:
    """The generated check as a syntax tree that only decides: its raises carry no message, and the
    validators it calls get no name prefix. The messages (built with the schema's definition as a dict
    literal, and `str.format(**locals())` for every list item) are never read here (jsonschema explains
    a rejected document), yet the if/then branches of the other kinds raise for every document: this cuts
    the check's time per instance by about 30% (36 -> 25 us)."""
    import ast

    class Lean(ast.NodeTransformer):
        def visit_Raise(self, node: ast.Raise) -> ast.Raise:
            exc = node.exc
            if isinstance(exc, ast.Call) and isinstance(exc.func, ast.Name) and exc.func.id in _EXCEPTIONS:
                node.exc = ast.copy_location(ast.Name(exc.func.id, ast.Load()), exc)
            return node

        def visit_Call(self, node: ast.Call) -> ast.Call:
            self.generic_visit(node)
            func = node.func
            if isinstance(func, ast.Name) and func.id.startswith("validate") and len(node.args) == 3:
                node.args[2] = ast.copy_location(ast.Constant(None), node.args[2])  # name_prefix
            return node

    return ast.fix_missing_locations(Lean().visit(ast.parse(source)))


_EXCEPTIONS = frozenset({"JsonSchemaValueException", "JsonSchemaValuesException"})


def validate(document: Any) -> list[SchemaIssue]:
    """Every schema violation in `document` (empty when valid), most specific first, one per field."""
    if _fast_check()(document):
        return []
    issues: dict[tuple[str | int, ...], SchemaIssue] = {}
    for error in _leaf_errors(_full_validator().iter_errors(document)):
        if error.validator == "required":  # one issue per missing field
            for missing in (k for k in error.validator_value if k not in error.instance):
                path = (*error.absolute_path, missing)
                issues.setdefault(path, SchemaIssue(path, "required field is missing", missing=True))
            continue
        issue = _word(error)
        issues.setdefault(issue.path, issue)
    if not issues:  # the validators disagree (a bug): the fast check's "invalid" still stands
        return [SchemaIssue((), "does not match the manifest schema")]
    return sorted(issues.values(), key=lambda i: [str(p) for p in i.path])


def _leaf_errors(errors: Iterable[Any]) -> Iterable[Any]:
    """Errors with sub-errors (if/then, $ref) replaced by their most specific causes."""
    for error in errors:
        if error.context:
            yield from _leaf_errors(error.context)
        else:
            yield error


def _hint(error: Any) -> str | None:
    pattern = error.schema.get("pattern") if isinstance(error.schema, dict) else None
    if pattern and "ms|s|m|h" in pattern:
        return DURATION_HINT
    if pattern and "KMGT" in pattern:
        return SIZE_HINT
    return None


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}


def _word(error: Any) -> SchemaIssue:
    path = tuple(error.absolute_path)
    keyword = error.validator
    value = error.instance
    hint = _hint(error)
    shown = "null" if value is None else show(value)  # as the YAML says it
    if keyword == "additionalProperties":
        return _unknown_fields(path, value, error.schema)
    if hint and keyword in ("type", "pattern"):
        return SchemaIssue(path, f"{shown} is not {hint}")
    if keyword == "type":
        types = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        # null (it unsets an inherited field) is not what anyone means to write where this is wrong
        wanted = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types if t != "null" or len(types) == 1)
        return SchemaIssue(path, f"{shown} is not {wanted}")
    if keyword == "enum":
        values = ", ".join(str(v) for v in error.validator_value if v is not None)
        return SchemaIssue(path, f"{shown} is not one of {values}")
    if keyword == "const":
        return SchemaIssue(path, f"{shown} is not {error.validator_value}")
    if keyword == "pattern":
        return SchemaIssue(path, f"{shown} is not valid here: {_pattern_words(path)}")
    if keyword in ("minimum", "exclusiveMinimum"):
        return SchemaIssue(path, f"{shown} is below the minimum of {error.validator_value}")
    if keyword in ("maximum", "exclusiveMaximum"):
        return SchemaIssue(path, f"{shown} is above the maximum of {error.validator_value}")
    if keyword == "maxLength":
        return SchemaIssue(path, f"is longer than {error.validator_value} characters")
    if keyword == "minLength":
        return SchemaIssue(path, "must not be empty")
    if keyword in ("maxItems", "maxProperties"):
        return SchemaIssue(path, f"has more than {error.validator_value} entries")
    return SchemaIssue(path, str(error.message))


def _pattern_words(path: Sequence[str | int]) -> str:
    last = path[-1] if path else ""
    if last in ("name", "node"):
        return "a DNS label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
    if last == "bridge":
        return "an interface name (letters, digits, '_', '.', '-', at most 15 characters)"
    if len(path) >= 2 and path[-2] == "labels":
        return "a label value (letters, digits, '-', '_', '.')"
    if len(path) >= 1 and path[-1] == "labels":
        return "a label key (letters, digits, '-', '_', '.', '/')"
    return "it contains characters that are not allowed"


def _unknown_fields(path: tuple[str | int, ...], value: Any, subschema: Any) -> SchemaIssue:
    known = sorted(subschema.get("properties", {})) if isinstance(subschema, dict) else []
    extra = sorted(k for k in value if k not in known) if isinstance(value, dict) else []
    first = extra[0] if extra else "?"
    import difflib  # only to word an error

    close = difflib.get_close_matches(str(first), known, n=1)
    advice = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(known)}"
    more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
    return SchemaIssue((*path, str(first)), f"unknown field{more}; {advice}")
