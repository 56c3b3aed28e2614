"""A fast reader for the plain block YAML that manifests are nearly always written in; anything else goes
to the strict reader (yamlsafe), which stays the reference.

Composing YAML through libyaml costs about 80 µs per 20-line instance, mostly in building a Python node
object per scalar; a 50,000-instance tree cannot load in 1.5 s that way. Most manifests use a small part
of YAML: block mappings and sequences, `key: value` lines, plain words and quotes without escapes,
`---` between documents, comments, flow mappings of plain words, and literal block scalars (`key: |`,
cloud-init's user-data). This module reads exactly that part, line by line, and
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
    literals: dict[int, str] = {}
    if "|" in text:
        cut = _cut_literals(text)
        if cut is None:
            return None
        text, literals = cut
    lines = _LINE.findall(text)
    if len(lines) != text.count("\n") + 1:
        return None  # a line that is not in the subset
    try:
        return _read(lines, literals)
    except _Bail:
        return None


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

    def __init__(self, literals: dict[int, str]) -> None:
        self.literals = literals  # line -> the value of the literal block scalar its key starts
        self.docs: list[YamlDocument] = []
        # open containers, innermost last: (column, container); a dict's column is its keys', a list's
        # its dashes'
        self.stack: list[tuple[int, Any]] = []
        self.pending = ""  # a key in stack[-1]'s dict whose value (a nested block, or null) comes next
        self.start = -1  # the line where the current document's root starts
        self.root: dict[str, Any] | None = None
        self.scalars: dict[str, Any] = {}  # token -> data, for this text (most values repeat)

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
                container.append(_scalar(item, self.scalars))
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
            container[key] = _scalar(value, self.scalars) if literal is None else literal
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
