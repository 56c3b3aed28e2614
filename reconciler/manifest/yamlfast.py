"""A fast reader for the plain block YAML that manifests are nearly always written in; anything else goes
to the strict reader (yamlsafe), which stays the reference.

Composing YAML through libyaml costs about 80 µs per 20-line instance, mostly in building a Python node
object per scalar; a 50,000-instance tree cannot load in 1.5 s that way. Most manifests use a small part
of YAML: block mappings and sequences, `key: value` lines, plain words and quotes without escapes,
`---` between documents, comments, flow mappings of plain words, and literal block scalars (`key: |`,
cloud-init's user-data). This module reads exactly that part, line by line (or, for a document whose
shape it has read before, from its values alone: see _read_by_shape), and
gives up (None) on the first line outside it, on anything it would have to judge (a duplicate key, a
number too long, a tab, an empty document), and on every non-ASCII or control character. Then the
strict reader reads the text from the start, so every error, warning and position comes from one place.

For every text it accepts, the result equals yamlsafe.load_documents' (data, document positions, no
issues); tests/manifest/test_yamlfast.py holds the two to that, on examples and on generated texts.
Scalars resolve through the strict reader's own YAML 1.2 core rules (yamlcore), and a run whose
manifests are all inside the subset never imports yaml.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from reconciler.manifest import yamlcore
from reconciler.manifest.yamlcore import YamlDocument, YamlFileError

MAX_DEPTH = 50  # deeper texts go to the strict reader, whose limits and messages apply

# One plain word: no indicator first (`-` only before another word character), no ':' last, none of
# `#,[]{}&*!|>'"%@` and backquote anywhere. Words are joined by single spaces.
_WORD = r"(?:[A-Za-z0-9_./+]|-(?=[A-Za-z0-9_./+=]))(?:[A-Za-z0-9_./+=@:-]*[A-Za-z0-9_./+=@-])?"
_KEY = r"[A-Za-z_][A-Za-z0-9_./-]*"
# A flow mapping of plain words without ':' (`{first: 49152, last: 49183}`); nothing nests in it.
_FLOW_WORD = r"(?:[A-Za-z0-9_./+]|-(?=[A-Za-z0-9_./+=]))[A-Za-z0-9_./+=@-]*"
_FLOW_MAP = rf"\{{ *(?:{_KEY}: +{_FLOW_WORD}(?: *, *{_KEY}: +{_FLOW_WORD})*)? *\}}"
_VALUE = rf"(?:{_WORD}(?: {_WORD})*|\"[^\"\\]*\"|'[^']*'|{_FLOW_MAP})"
# indent, then either "- " (item) with what follows, or "key:" with an optional value; an optional
# comment after a plain value (` #`), and trailing spaces.
_LINE = re.compile(
    rf"^(?:( *)(?:(- +))?(?:({_KEY}):(?: +({_VALUE}))?|({_VALUE}))(?: +#.*)? *|( *#.*| *)|(---))$",
    re.MULTILINE,
)
_NOT_SIMPLE = re.compile(r"[^\x20-\x7e\n]")  # tabs, CR, control and non-ASCII characters
_KEYWORDS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE", "null", "Null", "NULL"})
_NOTHING = object()
_intern = sys.intern


class _Bail(Exception):
    """The text leaves the subset: the strict reader takes over."""


def load_documents(text: str) -> tuple[list[YamlDocument], YamlFileError | None]:
    """yamlsafe.load_documents(text), read by the fast reader when the text allows it."""
    fast = read(text)
    if fast is not None:
        return fast, None
    from reconciler.manifest import yamlsafe  # imports yaml: only for texts the fast reader leaves

    return yamlsafe.load_documents(text)


def read(text: str) -> list[YamlDocument] | None:
    """The documents of `text` when it is inside the subset; None when the strict reader must read it."""
    if _NOT_SIMPLE.search(text) is not None:
        return None
    try:
        if "|" not in text:
            return _read_by_shape(text)
        cut = _cut_literals(text)
        if cut is None:
            return None
        text, literals = cut
        return _read(_lines(text), literals)
    except _Bail:
        return None


def _lines(text: str) -> list[tuple[str, ...]]:
    lines = _LINE.findall(text)
    if len(lines) != text.count("\n") + 1:
        raise _Bail  # a line that is not in the subset
    return lines


# Reading by shape. Most documents of a tree differ only in their values: the same keys, indentation,
# dashes and comments, line for line. A document's shape is its text with each value cut out of the
# lines that have one (`key: value`, `- value`, `- key: value`); the first document of a shape is read
# line by line as above, and from the second on, a shape that read cleanly has a builder: generated
# code that makes the document's data from its values, each checked and resolved as the line reader
# would (_TOKEN). Every line that decides structure (every line without a value, and every line's
# indentation, dash and key) is in the shape, so a document of a known shape has the structure the line
# reader gives it; only its values can leave the subset, and then the strict reader reads the text.
_SEPARATOR = re.compile(r"^---$\n?", re.MULTILINE)
# A value: what follows the first `: ` of a line, unless a comment (a search for a literal first is
# several times faster than a pattern anchored at each line's start). The first document of a shape
# proves that the line reader finds each value exactly there (_builder), or the shape gets no builder:
# a value inside a comment, a quoted key, or a `- item` stays in the shape, and a `- item` shape with
# values that differ is read line by line each time.
_VALUE_LINE = re.compile(r"(: +)(?!#)(\S.*)")
_TOKEN = re.compile(rf"({_VALUE})(?: +#.*)? *")  # a value, as _LINE reads it, and its comment
_ONCE = object()  # a shape read once: a builder is made when it comes again
MAX_SHAPES = 1024  # shapes remembered by the process (a hostile tree of all different ones costs no more)
MAX_SHAPE_VALUES = 2000  # documents with more values, or longer ones, are always read line by line
MAX_SHAPE_CHARS = 64 * 1024  # (nor is their shape remembered: the memo stays small)
_shapes: dict[str, Any] = {}  # shape -> _ONCE, None (not for a builder), or (builder, first line)


def _read_by_shape(text: str) -> list[YamlDocument]:
    parts = _SEPARATOR.split(text)
    docs: list[YamlDocument] = []
    line = 0
    values: dict[str, Any] = {}  # token -> data, for this text
    for number, part in enumerate(parts):
        if number or part or len(parts) == 1:  # else the nothing before a `---` on the first line
            docs.append(_document(part, line, len(docs), values))
        line += part.count("\n") + 1
    return docs


def _document(part: str, line: int, index: int, values: dict[str, Any]) -> YamlDocument:
    if len(part) > MAX_SHAPE_CHARS:
        return _read_one(part, line, index)
    pieces = _VALUE_LINE.split(part)  # [text, ": ", value, text, ": ", value, ..., text]
    tokens = pieces[2::3]
    del pieces[2::3]
    shape = "\0".join(pieces)
    known = _shapes.get(shape)
    if known is _ONCE and len(tokens) <= MAX_SHAPE_VALUES:
        known = _shapes[shape] = _builder(part, tokens)
    if known is None or known is _ONCE:
        doc = _read_one(part, line, index)
        if len(_shapes) >= MAX_SHAPES:
            _shapes.clear()
        _shapes.setdefault(shape, _ONCE)
        return doc
    build, start = known
    data = build([values[t] if t in values else _value(t, values) for t in tokens])
    return YamlDocument(index, line + start, 0, data, ())


def _read_one(part: str, line: int, index: int) -> YamlDocument:
    """The one document `part` (a text without `---`) holds, read line by line."""
    docs = _read(_lines(part), {})
    if len(docs) != 1:
        raise _Bail
    doc = docs[0]
    return YamlDocument(index, line + doc.line, 0, doc.data, ())


def _value(token: str, values: dict[str, Any]) -> Any:
    found = _TOKEN.fullmatch(token)
    if found is None:
        raise _Bail  # not a value of the subset (a second `: `, a flow sequence, ...)
    value = found.group(1)
    if value[0] == "{":
        return _flow_mapping(value, values)  # a new mapping each time: never shared
    data = values[token] = _scalar(value, values)
    return data


class _Slot:
    """Where a value goes, in the data of a document read to make a builder."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _builder(part: str, tokens: list[str]) -> tuple[Any, int] | None:
    """(a function from a document's values to its data, the document's first line) for the shape of
    `part`, or None when its values are not where the line reader finds them."""
    read: list[str] = []

    def slot(token: str) -> _Slot:
        read.append(token)
        return _Slot(len(read) - 1)

    reader = _Reader({}, slot)
    for number, (indent, dash, key, value, item, _blank, separator) in enumerate(_lines(part)):
        if separator:
            raise _Bail
        if key or item:
            reader.line(number, len(indent), dash, key, value, item)
    reader.finish()
    found = [_TOKEN.fullmatch(t) for t in tokens]
    if read != [f.group(1) if f else None for f in found]:
        return None
    source = f"lambda v: {_code(reader.docs[0].data)}"
    # the source is ours: keys matched _KEY and are quoted by repr(), every value is a v[i]
    return eval(compile(source, "<yamlfast shape>", "eval"), {}), reader.docs[0].line


def _code(node: Any) -> str:
    """Python source that makes `node` (keys are _KEY words, so repr() quotes them safely)."""
    if type(node) is dict:
        return "{" + ",".join(f"{key!r}:{_code(value)}" for key, value in node.items()) + "}"
    if type(node) is list:
        return "[" + ",".join(_code(item) for item in node) + "]"
    if type(node) is _Slot:
        return f"v[{node.index}]"
    if node is None:
        return "None"
    raise _Bail  # nothing else is in a document read with slots


# `key: |` or `key: |-` (clip or strip chomping, the indentation found from the first line), alone on its
# line: a literal block scalar, as cloud-init's user-data is written. Its lines are cut out of the text
# (blank lines in their place, so line numbers stay) and its value is given by line number.
_LITERAL_HEAD = re.compile(rf"^( *(?:- +)?)({_KEY}): +\|(-?) *$", re.MULTILINE)
_PLACEHOLDER = "literal"


def _cut_literals(text: str) -> tuple[str, dict[int, str]] | None:
    """`text` with each literal block's lines blanked, and the blocks' values by their key's line; None
    for a block the strict reader must judge (an indentation it would refuse, keep chomping, ...)."""
    lines = text.split("\n")
    literals: dict[int, str] = {}
    covered = 0  # lines before this are an earlier block's (its text may hold `key: |` lines too)
    head, at = 0, 0
    for found in _LITERAL_HEAD.finditer(text):
        head += text.count("\n", at, found.start())  # counted on from the previous head: linear
        at = found.start()
        if head < covered:
            continue
        m = _LITERAL_HEAD.match(lines[head])
        if m is None:
            return None
        key_column = len(m.group(1))
        first = head + 1
        while first < len(lines) and not lines[first].strip():
            first += 1
        if first == len(lines):
            return None
        indent = len(lines[first]) - len(lines[first].lstrip(" "))
        if indent <= key_column or any(len(lines[i]) > indent for i in range(head + 1, first)):
            return None  # an empty block, or leading blank lines with more spaces than the content
        end, content = head + 1, []  # leading blank lines are line breaks of the value
        while end < len(lines):
            line = lines[end]
            if not line.strip():
                if len(line) > indent:
                    return None  # spaces that would be content: left to the strict reader
                content.append("")
            elif len(line) - len(line.lstrip(" ")) >= indent:
                content.append(line[indent:])
            elif len(line) - len(line.lstrip(" ")) > key_column:
                return None  # less indented than the block, more than its key: an error to report
            else:
                break
            end += 1
        while content and not content[-1]:
            content.pop()
        body = "\n".join(content)
        literals[head] = body if m.group(3) == "-" else body + "\n"
        lines[head] = f"{m.group(1)}{m.group(2)}: {_PLACEHOLDER}"
        for i in range(head + 1, end):
            lines[i] = ""
        covered = end
    return "\n".join(lines), literals


def _scalar(token: str, seen: dict[str, Any]) -> Any:
    if token[0] == "{":
        return _flow_mapping(token, seen)
    value = seen.get(token, _NOTHING)
    if value is _NOTHING:
        if token[0] == '"' or token[0] == "'":
            value = token[1:-1]
        else:
            value, ok = yamlcore.plain_value(token)
            if not ok:
                raise _Bail
        seen[token] = value
    return value


def _flow_mapping(token: str, seen: dict[str, Any]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    inside = token[1:-1].strip()
    for entry in inside.split(",") if inside else ():
        key, _, value = entry.partition(":")
        key = key.strip()
        if key in mapping or key in _KEYWORDS:
            raise _Bail
        mapping[_intern(key)] = _scalar(value.strip(), seen)
    return mapping


def _read(lines: list[tuple[str, ...]], literals: dict[int, str]) -> list[YamlDocument]:
    reader = _Reader(literals)
    for number, (indent, dash, key, value, item, _blank, separator) in enumerate(lines):
        if separator:
            reader.separator(number)
        elif key or item:  # else a blank or comment line (a key or an item is never empty)
            reader.line(number, len(indent), dash, key, value, item)
    reader.finish()
    return reader.docs


class _Reader:
    """Builds the documents line by line; raises _Bail where the text leaves the subset."""

    def __init__(self, literals: dict[int, str], scalar: Callable[[str], Any] | None = None) -> None:
        self.literals = literals  # line -> the value of the literal block scalar its key starts
        self.docs: list[YamlDocument] = []
        # open containers, innermost last: (column, container); a dict's column is its keys', a list's
        # its dashes'
        self.stack: list[tuple[int, Any]] = []
        self.pending = ""  # a key in stack[-1]'s dict whose value (a nested block, or null) comes next
        self.start = -1  # the line where the current document's root starts
        self.root: dict[str, Any] | None = None
        self.scalars: dict[str, Any] = {}  # token -> data, for this text (most values repeat)
        self.scalar: Callable[[str], Any] = scalar or (lambda token: _scalar(token, self.scalars))

    def finish(self) -> None:
        if self.root is None:
            raise _Bail  # an empty document (null)
        if self.pending:
            self.stack[-1][1][self.pending] = None
        self.docs.append(YamlDocument(len(self.docs), self.start, 0, self.root, ()))

    def separator(self, number: int) -> None:
        if self.root is not None or self.docs:
            self.finish()
        elif number:
            raise _Bail  # only comments before the first `---`: leave it to the strict reader
        self.stack, self.pending, self.start, self.root = [], "", -1, None

    def line(self, number: int, column: int, dash: str, key: str, value: str, item: str) -> None:
        stack = self.stack
        if self.root is None:
            if column or dash or not key:
                raise _Bail  # the root is not a mapping at column 0
            self.root = {}
            stack.append((0, self.root))
            self.start = number
        if self.pending:
            self._open(column, dash)
        top_column, container = stack[-1]
        while top_column > column or (top_column == column and not dash and type(container) is list):
            stack.pop()
            if not stack:
                raise _Bail
            top_column, container = stack[-1]
        if top_column != column:
            raise _Bail
        if dash:
            if type(container) is not list:
                raise _Bail
            if not key:
                container.append(self.scalar(item))
                return
            mapping: dict[str, Any] = {}
            container.append(mapping)
            stack.append((column + len(dash), mapping))
            container = mapping
        elif type(container) is not dict or not key:
            raise _Bail
        if key in container or key in _KEYWORDS or len(stack) > MAX_DEPTH:
            raise _Bail
        key = _intern(key)  # the same few keys in every document: one string each, not one per line
        if value:
            literal = self.literals.get(number) if self.literals else None
            container[key] = self.scalar(value) if literal is None else literal
        else:
            self.pending = key

    def _open(self, column: int, dash: str) -> None:
        """The pending key's value: a list or a dict that this line starts, or null."""
        top_column, parent = self.stack[-1]
        child: Any = None
        if dash and column >= top_column:
            child = []
        elif not dash and column > top_column:
            child = {}
        parent[self.pending] = child
        if child is not None:
            self.stack.append((column, child))
        self.pending = ""
