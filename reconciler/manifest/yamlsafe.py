"""Safe, strict YAML loading: plain data only, every document, with positions for what is wrong.

PyYAML's safe loader is still too lenient for manifests: it keeps the last of duplicate keys silently,
expands aliases without limit (billion laughs), turns `52:54:00:12:34:56` into an integer (YAML 1.1
sexagesimal) and dates into `datetime`. This loader uses libyaml (`CSafeLoader`) for speed and changes it:

- YAML 1.2 core scalars only: true/false, null, decimal/0x/0o integers, floats; everything else is a string;
- tags other than those (`!!python/object`, `!!binary`, `!custom`, ...) are errors;
- duplicate keys and non-string keys are reported (with their line), not silently dropped;
- alias expansion is capped and recursive aliases are rejected.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MAX_EXPANDED_NODES = 100_000  # per document, after alias expansion
MAX_NUMBER_DIGITS = 30


@dataclass(frozen=True, slots=True)
class YamlIssue:
    """Something wrong at a position (0-based line/column as libyaml reports them)."""

    line: int
    column: int
    message: str


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """One document: its data (None for an empty one), where it starts, what was wrong inside it."""

    index: int
    line: int  # 0-based
    column: int
    data: Any
    issues: tuple[YamlIssue, ...]


class YamlFileError(Exception):
    """The stream itself is broken (syntax error): documents after this point are unreadable."""

    def __init__(self, issue: YamlIssue) -> None:
        super().__init__(issue.message)
        self.issue = issue


_INT_RE = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RE = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_BOOL_RE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL_RE = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"


class StrictLoader(yaml.CSafeLoader):
    """libyaml parser + a constructor that builds only JSON-like data and records what it refuses."""

    yaml_implicit_resolvers = {}  # noqa: RUF012 (YAML 1.2 core rules, filled below)
    yaml_constructors: ClassVar[dict[Any, Any]] = {}

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.issues: list[YamlIssue] = []

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                mark = key_node.start_mark
                self.issues.append(YamlIssue(mark.line, mark.column, f"key {_short(key)} is not a string"))
                continue
            if key in mapping:
                self.issues.append(_duplicate(node, key_node, key))
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def construct_plain_map(self, node: MappingNode) -> Iterator[dict[str, Any]]:
        data: dict[str, Any] = {}
        yield data
        data.update(self.construct_mapping(node))

    def construct_int(self, node: ScalarNode) -> int:
        text = str(node.value)
        if len(text) > MAX_NUMBER_DIGITS:
            raise _too_long(node)
        if text.startswith("0x"):
            return int(text[2:], 16)
        if text.startswith("0o"):
            return int(text[2:], 8)
        return int(text, 10)

    def construct_float(self, node: ScalarNode) -> float:
        if len(str(node.value)) > MAX_NUMBER_DIGITS:
            raise _too_long(node)
        return float(SafeFloat.construct(self, node))

    def construct_unknown(self, node: Node) -> None:
        raise yaml.constructor.ConstructorError(
            None, None, f"tag {node.tag!r} is not allowed (plain data only)", node.start_mark
        )


class SafeFloat:
    """PyYAML's float constructor (handles .inf/.nan), reused as is."""

    construct = yaml.constructor.SafeConstructor.construct_yaml_float


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _too_long(node: ScalarNode) -> yaml.constructor.ConstructorError:
    return yaml.constructor.ConstructorError(
        None,
        None,
        f"number {str(node.value)[:20]}... has more than {MAX_NUMBER_DIGITS} digits",
        node.start_mark,
    )


def _duplicate(mapping: MappingNode, key_node: Node, key: str) -> YamlIssue:
    first = next(k for k, _ in mapping.value if isinstance(k, ScalarNode) and k.value == key)
    mark = key_node.start_mark
    return YamlIssue(
        mark.line, mark.column, f"duplicate key {_short(key)} (first at line {first.start_mark.line + 1})"
    )


for _tag, _regexp, _first in (
    ("tag:yaml.org,2002:bool", _BOOL_RE, "tTfF"),
    (_INT_TAG, _INT_RE, "-+0123456789"),
    (_FLOAT_TAG, _FLOAT_RE, "-+0123456789."),
    ("tag:yaml.org,2002:null", _NULL_RE, ["~", "n", "N", ""]),
):
    StrictLoader.add_implicit_resolver(_tag, _regexp, list(_first))

StrictLoader.add_constructor("tag:yaml.org,2002:null", yaml.constructor.SafeConstructor.construct_yaml_null)  # type: ignore[type-var]
StrictLoader.add_constructor("tag:yaml.org,2002:bool", yaml.constructor.SafeConstructor.construct_yaml_bool)  # type: ignore[type-var]
StrictLoader.add_constructor(_INT_TAG, StrictLoader.construct_int)
StrictLoader.add_constructor(_FLOAT_TAG, StrictLoader.construct_float)
StrictLoader.add_constructor("tag:yaml.org,2002:str", yaml.constructor.SafeConstructor.construct_yaml_str)  # type: ignore[type-var]
StrictLoader.add_constructor("tag:yaml.org,2002:seq", yaml.constructor.SafeConstructor.construct_yaml_seq)  # type: ignore[type-var]
StrictLoader.add_constructor("tag:yaml.org,2002:map", StrictLoader.construct_plain_map)
StrictLoader.add_constructor(None, StrictLoader.construct_unknown)


class _Recursive(Exception):
    pass


class _TooBig(Exception):
    pass


def _check_expansion(root: Node) -> str | None:
    """Why the document's alias expansion is unacceptable (too big, recursive), or None."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Recursive
        active.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(n) for n in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        sizes[key] = total
        if total > MAX_EXPANDED_NODES:
            raise _TooBig
        return total

    try:
        size(root)
    except _Recursive:
        return "recursive alias (an anchor used inside itself)"
    except _TooBig:
        return f"aliases expand to more than {MAX_EXPANDED_NODES} nodes"
    return None


def load_documents(text: str) -> tuple[list[YamlDocument], YamlFileError | None]:
    """Every document in `text`, in order, plus the syntax error that stopped reading (if any)."""
    may_alias = "*" in text
    docs: list[YamlDocument] = []
    loader = StrictLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            mark = node.start_mark
            issues: list[YamlIssue] = []
            data: Any = None
            bad_aliases = _check_expansion(node) if may_alias else None
            if bad_aliases:
                issues.append(YamlIssue(mark.line, mark.column, bad_aliases))
            else:
                loader.issues = issues
                try:
                    data = loader.construct_document(node)
                except yaml.constructor.ConstructorError as err:
                    issues.append(_issue(err, mark))
                    data = None
                except (ValueError, RecursionError) as err:
                    issues.append(YamlIssue(mark.line, mark.column, f"unreadable value: {err}"))
                    data = None
                loader.constructed_objects = {}
            docs.append(YamlDocument(len(docs), mark.line, mark.column, data, tuple(issues)))
    except yaml.MarkedYAMLError as err:
        return docs, YamlFileError(_issue(err, None))
    except yaml.YAMLError as err:  # ReaderError: a character YAML does not allow
        return docs, YamlFileError(_reader_issue(err, text))
    except RecursionError:
        return docs, YamlFileError(YamlIssue(0, 0, "nesting too deep"))
    finally:
        loader.dispose()
    return docs, None


def _issue(err: yaml.MarkedYAMLError, fallback: yaml.Mark | None) -> YamlIssue:
    mark = err.problem_mark or err.context_mark or fallback
    text = " ".join(str(p) for p in (err.context, err.problem) if p) or "invalid YAML"
    return YamlIssue(mark.line if mark else 0, mark.column if mark else 0, text)


def _reader_issue(err: yaml.YAMLError, text: str) -> YamlIssue:
    position = getattr(err, "position", None)
    character = getattr(err, "character", None)
    if isinstance(position, int):
        before = text.encode("utf-8")[:position].decode("utf-8", "replace")
        line = before.count("\n")
        column = len(before) - (before.rfind("\n") + 1)
        what = f"character {character!r}" if character is not None else "a character"
        return YamlIssue(line, column, f"{what} is not allowed in YAML")
    return YamlIssue(0, 0, str(err).replace("\n", " "))
