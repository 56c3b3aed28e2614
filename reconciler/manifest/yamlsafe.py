"""Safe, strict YAML loading: plain data only, every document, with positions for what is wrong.

PyYAML's safe loader is too lenient for manifests: it keeps the last of duplicate keys silently, expands
aliases without limit (billion laughs), turns `52:54:00:12:34:56` into an integer (YAML 1.1 sexagesimal)
and dates into `datetime`. Here libyaml (PyYAML's C parser) builds the node tree, and a small converter
of our own (faster than PyYAML's generic constructor) turns nodes into data:

- YAML 1.2 core scalars only: true/false, null, decimal/0x/0o integers, floats; everything else is a string;
- other tags (`!!python/object`, `!!binary`, `!!timestamp`, `!custom`, ...) are errors: no object is built;
- duplicate keys and non-string keys are reported with their line, not silently dropped;
- alias expansion is capped and recursive aliases are rejected;
- where libyaml departs from YAML 1.2, the result is the spec's data or an error, never other data: the
  non-specific tag `!` makes a string (libyaml resolves `! 12` as if plain), a missing final line break
  changes nothing (libyaml drops a block scalar's last line break there, and its trailing space line),
  and `?x` in a flow collection or an anchor name with `:` (`&an:chor`), which libyaml splits
  differently, are errors at the token (see `_departures`).
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from reconciler.manifest.yamlcore import MAP_TAG as _MAP
from reconciler.manifest.yamlcore import (  # noqa: F401 (YamlDocument, MAX_NUMBER_CHARS: part of this API)
    MAX_NUMBER_CHARS,
    YamlDocument,
    YamlFileError,
    YamlIssue,
    bad_tag,
    resolve_plain,
    scalar_value,
)
from reconciler.manifest.yamlcore import SEQ_TAG as _SEQ
from reconciler.manifest.yamlcore import STR_TAG as _STR

MAX_EXPANDED_NODES = 100_000  # per document, after alias expansion
MAX_DEPTH = 100  # nesting of collections; libyaml's composer recurses in C and crashes past ~20,000
SCAN_ABOVE = 5000  # files that might nest deeper than this are checked before composing

_SPACE = " \t\r\n"
_FLOW = ",[]{}"
# Cheap pre-filters: only a text that matches one is token-scanned for the departures it names.
_MAYBE_FLOW_KEY = re.compile(r"\?[^\s,\[\]{}]")
_MAYBE_LONG_ANCHOR = re.compile(r"[&*][0-9A-Za-z_-]+[?:%@`]")  # libyaml's anchor ends; YAML 1.2's goes on


class StrictParser(yaml.CSafeLoader):
    """libyaml's parser and composer (CSafeLoader; its constructor is unused: see _Converter), with YAML
    1.2 core tag resolution for plain scalars."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # libyaml's composer calls these two for every node, for path resolvers we do not use. C builtins
        # that ignore their arguments cost a fraction of a Python method call (a third of compose time).
        self.descend_resolver = {}.get  # type: ignore[method-assign,assignment]
        self.ascend_resolver = tuple  # type: ignore[method-assign,assignment]

    def resolve(self, kind: type[Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            return resolve_plain(value) if implicit[0] else _STR
        return _SEQ if kind is SequenceNode else _MAP


class _Converter:
    """Node tree -> plain data; records issues instead of stopping at the first one."""

    def __init__(self, may_alias: bool, text: str = "") -> None:
        self.issues: list[YamlIssue] = []
        self._may_alias = may_alias
        self._text = text
        self._done: dict[int, Any] = {}  # aliases share the converted object, as PyYAML does

    def issue(self, node: Node, message: str) -> None:
        self.issues.append(YamlIssue(node.start_mark.line, node.start_mark.column, message))

    def convert(self, node: Node) -> Any:
        if self._may_alias:
            cached = self._done.get(id(node), self)
            if cached is not self:
                return cached
        tag = node.tag
        value: Any
        if type(node) is ScalarNode:
            value = node.value if tag == _STR or _non_specific(self._text, node) else self._scalar(node, tag)
        elif type(node) is MappingNode and tag == _MAP:
            value = self._mapping(node)
        elif type(node) is SequenceNode and tag == _SEQ:
            value = [self.convert(item) for item in node.value]
        else:
            self.issue(node, bad_tag(tag))
            value = None
        if self._may_alias:
            self._done[id(node)] = value
        return value

    def _scalar(self, node: ScalarNode, tag: str) -> Any:
        value, message = scalar_value(node.value, tag)
        if message is not None:
            self.issue(node, message)
        return value

    def _mapping(self, node: MappingNode) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = (
                key_node.value
                if key_node.tag == _STR and type(key_node) is ScalarNode
                else self.convert(key_node)
            )
            if not isinstance(key, str):
                self.issue(key_node, f"key {_short(key)} is not a string")
                continue
            if key in mapping:
                self.issues.append(_duplicate(node, key_node, key))
            if value_node.tag == _STR and type(value_node) is ScalarNode:  # the common case, inlined
                mapping[key] = value_node.value
            else:
                mapping[key] = self.convert(value_node)
        return mapping


def _non_specific(text: str, node: Node) -> bool:
    """Whether the scalar carries the non-specific tag `!` (YAML 1.2: a string, whatever it looks like).

    libyaml resolves `! 12` as it resolves a plain `12` and keeps no trace of the `!` in the node, so the
    node's properties (`&anchor`, tag; they start at its start mark) are read from the text."""
    at = node.start_mark.index
    while at < len(text) and text[at] in "&!":
        end = at
        while end < len(text) and text[end] not in _SPACE and text[end] not in _FLOW:
            end += 1
        if text[at : end] == "!":
            return True
        if text[at] == "!":
            return False  # another tag (refused or resolved elsewhere)
        at = end
        while at < len(text) and text[at] in _SPACE:  # properties may be separated by line breaks too
            at += 1
    return False


def _departures(text: str) -> list[YamlIssue]:
    """Tokens that libyaml reads differently from YAML 1.2, where changing the data silently would be
    wrong: `?x` in a flow collection (YAML 1.2: the text '?x'; libyaml: the key 'x') and anchor or alias
    names with `?:%@` or a backtick (YAML 1.2 reads `&an:chor` as one name; libyaml stops at `:`).
    Only texts that match a pre-filter are scanned; a syntax error is left to the real parse."""
    flow_keys = _MAYBE_FLOW_KEY.search(text) is not None and ("[" in text or "{" in text)
    anchors = _MAYBE_LONG_ANCHOR.search(text) is not None
    if not flow_keys and not anchors:
        return []
    issues: list[YamlIssue] = []
    parser = StrictParser(text)
    flow = 0
    try:
        while parser.check_token():
            token: Any = parser.get_token()
            kind = type(token)
            start, after = token.start_mark.index, token.end_mark.index
            following = text[after : after + 1]
            if kind in (yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken):
                flow += 1
            elif kind in (yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken):
                flow -= 1
            elif kind is yaml.KeyToken and flow and after > start and following not in ("", *_SPACE, *_FLOW):
                word = _word_at(text, start, plain=True)
                issues.append(_at(token, f"{word!r} in a flow collection: YAML 1.2 reads it as text, this "
                                         f"parser as a key; quote it, or write '? {word[1:]}' for a key"))
            elif kind in (yaml.AnchorToken, yaml.AliasToken) and following and following in "?:%@`":
                what = "anchor" if kind is yaml.AnchorToken else "alias"
                issues.append(_at(token, f"{what} {_word_at(text, start)!r}: YAML 1.2 reads the whole name, "
                                         f"this parser stops at {following!r}; use letters, digits, '-' and "
                                         "'_' only"))
    except yaml.YAMLError:
        pass  # the real parse reports it
    finally:
        parser.dispose()
    return issues


def _word_at(text: str, start: int, plain: bool = False) -> str:
    """The name or plain scalar that starts at `start`, as YAML 1.2 delimits it (shortened for messages);
    a plain scalar also ends at ':' before a space or a flow indicator."""
    end = start
    while end < len(text) and text[end] not in _SPACE and text[end] not in _FLOW:
        if plain and text[end] == ":" and (end + 1 == len(text) or text[end + 1] in _SPACE + _FLOW):
            break
        end += 1
    return text[start:end][:40]


def _at(token: Any, message: str) -> YamlIssue:
    return YamlIssue(token.start_mark.line, token.start_mark.column, message)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _duplicate(mapping: MappingNode, key_node: Node, key: str) -> YamlIssue:
    first = next(k for k, _ in mapping.value if isinstance(k, ScalarNode) and k.value == key)
    mark = key_node.start_mark
    return YamlIssue(
        mark.line, mark.column, f"duplicate key {_short(key)} (first at line {first.start_mark.line + 1})"
    )


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


def _nesting_bound(text: str) -> int:
    """An upper bound of how deep collections nest, counting only what opens one on the same line
    (flow brackets, compact '- ' and '? '). Deeper block nesting needs indentation, which the file size
    cap bounds far below the crash depth."""
    return sum(text.count(token) for token in ("[", "{", "- ", "? ", "-\t", "?\t"))


def _too_deep(text: str) -> YamlFileError | None:
    """Where collections nest deeper than MAX_DEPTH, found with libyaml's (iterative) event parser."""
    if _nesting_bound(text) <= SCAN_ABOVE:
        return None  # composing is safe; the converter reports deep nesting (RecursionError)
    parser = StrictParser(text)
    depth = 0
    try:
        while parser.check_event():
            event = parser.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    line, column = (mark.line, mark.column) if mark else (0, 0)
                    return YamlFileError(YamlIssue(line, column, f"nesting deeper than {MAX_DEPTH} levels"))
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # the real parse reports it
    finally:
        parser.dispose()
    return None


def load_documents(text: str) -> tuple[list[YamlDocument], YamlFileError | None]:
    """Every document in `text`, in order, plus the syntax error that stopped reading (if any)."""
    if text and text[-1] not in "\n\r":
        text += "\n"  # a final line break never changes the data (YAML 1.2; libyaml's block scalars differ)
    too_deep = _too_deep(text)
    if too_deep is not None:
        return [], too_deep
    departures = _departures(text)
    may_alias = "*" in text  # no alias token, no alias: skip the expansion walk
    docs: list[YamlDocument] = []
    parser = StrictParser(text)
    try:
        while parser.check_node():
            node = parser.get_node()
            if node is None:
                break
            mark = node.start_mark
            problem = _check_expansion(node) if may_alias else None
            if problem:
                docs.append(
                    YamlDocument(
                        len(docs), mark.line, mark.column, None, (YamlIssue(mark.line, mark.column, problem),)
                    )
                )
                continue
            converter = _Converter(may_alias, text)
            try:
                data = converter.convert(node)
            except RecursionError:
                converter.issues.append(YamlIssue(mark.line, mark.column, "nesting too deep"))
                data = None
            docs.append(YamlDocument(len(docs), mark.line, mark.column, data, tuple(converter.issues)))
    except yaml.MarkedYAMLError as err:
        return _with_departures(docs, departures), YamlFileError(_issue(err, text))
    except yaml.YAMLError as err:  # ReaderError: a character YAML does not allow
        return _with_departures(docs, departures), YamlFileError(_reader_issue(err, text))
    except RecursionError:
        return _with_departures(docs, departures), YamlFileError(YamlIssue(0, 0, "nesting too deep"))
    finally:
        parser.dispose()
    return _with_departures(docs, departures), None


def _with_departures(docs: list[YamlDocument], departures: list[YamlIssue]) -> list[YamlDocument]:
    """Each departure becomes an issue of the document it is in (the last one starting before it)."""
    if not departures or not docs:
        return docs
    out = list(docs)
    for issue in departures:
        where = (issue.line, issue.column)
        i = max((i for i, d in enumerate(docs) if (d.line, d.column) <= where), default=0)
        doc = out[i]
        out[i] = YamlDocument(doc.index, doc.line, doc.column, doc.data, (*doc.issues, issue))
    return out


def _issue(err: yaml.MarkedYAMLError, text: str) -> YamlIssue:
    mark = err.problem_mark or err.context_mark
    line, column = (mark.line, mark.column) if mark else (0, 0)
    lines = text.split("\n")
    if line < len(lines) and lines[line][column : column + 1] == "\t":
        return YamlIssue(line, column, "a tab character; YAML is indented with spaces only")
    message = " ".join(str(p) for p in (err.context, err.problem) if p) or "invalid YAML"
    return YamlIssue(line, column, message)


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
