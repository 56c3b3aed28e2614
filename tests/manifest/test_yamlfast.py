"""The fast reader gives exactly the strict reader's result for every text it accepts, and leaves the rest
(anything it would have to judge or might read differently) to the strict reader."""

from __future__ import annotations

import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifest import yamlfast, yamlsafe
from tests.manifest.helpers import NODE_A, instance

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same_as_strict(text: str) -> list[yamlsafe.YamlDocument] | None:
    """The fast reader's documents, checked against the strict reader's when it accepted the text."""
    fast = yamlfast.read(text)
    if fast is not None:
        strict, fatal = yamlsafe.load_documents(text)
        assert fatal is None
        assert fast == strict
        assert all(not d.issues for d in strict)
    return fast


ACCEPTED: list[tuple[str, list[Any]]] = [
    ("a: 1\n", [{"a": 1}]),
    ("a: 1", [{"a": 1}]),  # no final line break
    ("a:\n  b: x\n  c:\n    - 1\n    - two\n", [{"a": {"b": "x", "c": [1, "two"]}}]),
    ("a:\n- x\n- y\nb: 2\n", [{"a": ["x", "y"], "b": 2}]),  # a sequence at its key's indentation
    ("l:\n  - k: 1\n    m: 2\n  -   k: 3\n", [{"l": [{"k": 1, "m": 2}, {"k": 3}]}]),
    ("a:\nb: ~x\n".replace("~x", "x"), [{"a": None, "b": "x"}]),
    ("a: true\nb: False\nc: null\nd: NULL\ne: 0x1F\nf: 0o17\ng: -5\nh: +3\ni: 1.5e3\nj: 1e3\n",
     [{"a": True, "b": False, "c": None, "d": None, "e": 31, "f": 15, "g": -5, "h": 3, "i": 1500.0,
       "j": 1000.0}]),
    ("a: yes\nb: on\nc: 512M\nd: 52:54:00:12:34:56\ne: 1:30\nf: 0x\ng: 2026-01-01\n",
     [{"a": "yes", "b": "on", "c": "512M", "d": "52:54:00:12:34:56", "e": "1:30", "f": "0x",
       "g": "2026-01-01"}]),
    ("a: \"x: #y\"\nb: 'it'\nc: \"\"\nd: hello big world\n", [{"a": "x: #y", "b": "it", "c": "", "d":
                                                                "hello big world"}]),
    ("# top\na: 1  # one\n\n  # indented comment\nb:   # nothing\nc: x#y\n".replace("x#y", "z"),
     [{"a": 1, "b": None, "c": "z"}]),
    ("a: 1\n---\nb: 2\n", [{"a": 1}, {"b": 2}]),
    ("---\na: 1\n---\n# c\nb: 2\n", [{"a": 1}, {"b": 2}]),
    ("a: /srv/x.img\nb: user@host\nc: a=b\nd: -x\ne: x-\nf: -.inf\ng: http://h/p\n",
     [{"a": "/srv/x.img", "b": "user@host", "c": "a=b", "d": "-x", "e": "x-", "f": -math.inf,
       "g": "http://h/p"}]),
    ("k.s/t-u_v: 1\n", [{"k.s/t-u_v": 1}]),
    ("a: ../state/x\nb: .5\nc: .inf\nd: .\ne:\n  - ...\n", [{"a": "../state/x", "b": 0.5, "c": math.inf,
                                                           "d": ".", "e": ["..."]}]),
    ("p: {first: 49152, last: 49183}\nq: {}\nr: { a: x , b: -1 }  # c\nl:\n  - {k: v}\n",
     [{"p": {"first": 49152, "last": 49183}, "q": {}, "r": {"a": "x", "b": -1}, "l": [{"k": "v"}]}]),
    ("a: |\n  x\n", [{"a": "x\n"}]),
    ("a: |\n\n x\n", [{"a": "\nx\n"}]),  # a leading blank line is a line break of the value
    ("a: |-\n  x\n  y\nb: 1\n", [{"a": "x\ny", "b": 1}]),
    ("u: |\n  #cloud-config\n  users: [{name: ops, keys: ['k: v']}]\n\n    indented: |\n  - x\n\n\nb: 2\n",
     [{"u": "#cloud-config\nusers: [{name: ops, keys: ['k: v']}]\n\n  indented: |\n- x\n", "b": 2}]),
    ("l:\n  - k: |\n      x\n    m: 1\n---\nc: |\n  y", [{"l": [{"k": "x\n", "m": 1}]}, {"c": "y\n"}]),
    (instance(), [yaml.safe_load(instance())]),
    (NODE_A, [yaml.safe_load(NODE_A)]),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted_texts_read_as_the_strict_reader_reads_them(text: str, expected: list[Any]) -> None:
    docs = _same_as_strict(text)
    assert docs is not None
    assert [d.data for d in docs] == expected


def test_document_positions_are_the_strict_readers() -> None:
    docs = _same_as_strict("# c\n\na: 1\n---\n\nb: 2\n")
    assert docs is not None
    assert [(d.index, d.line, d.column) for d in docs] == [(0, 2, 0), (1, 5, 0)]


LEFT_TO_THE_STRICT_READER = [
    "a: [1, 2]\n", "a: &x 1\nb: *x\n", "a: !!str 1\n", "a: ! 1\n",
    "a:\tb\n", "a: 1\r\n", "a: é\n", "a: \x01\n", "\ufeffa: 1\n",
    "a: 1\na: 2\n",  # duplicate key: the strict reader reports it
    "a: {b: 1, b: 2}\n", "a: {true: 1}\n", "a: {b: 1,}\n", "a: {b: \"x\"}\n", "a: {b: c:d}\n",
    "a: {? b: 1}\n", "a: {b: [1]}\n", "a: {b: {c: 1}}\n", "a: {b}\n", "a: {b: 1\n",
    "a: 1234567890123456789012345678901\n",  # too long a number
    "true: 1\n", "null: 1\n", "1: x\n", "\"a\": 1\n", "? a\n: 1\n",
    "a: >\n  x\n", "a: b\n  c\n", "- |\n  x\n", "a: |+\n  x\n", "a: |2\n  x\n",  # folded, multi-line
    "a: |\n", "a: |\nb: 1\n", "a: |\n    x\n  y\n", "a: |\n    \n  x\n", "a: |\n  x\n     \n",
    "a: | # c\n  x\n",
    "a: \"x\\ty\"\n", "a: 'it''s'\n", "a: \"x\n  y\"\n",
    "a: ~\n", "a: x  y\n", "a: b: c\n", "a: x #\n".replace(" #", "#"),
    "%YAML 1.2\n---\na: 1\n", "a: 1\n...\n", "--- a: 1\n", "---x\n", "a: 1\n--- \n",
    "a: 1\n---\n", "---\n---\na: 1\n", "", "# only a comment\n", "# c\n---\na: 1\n",
    "- a\n", "x\n", "  a: 1\n", "-\n", "- - a\n",
    "a:\n  b: 1\n c: 2\n", "a: 1\n  b: 2\n", "a:\n  - x\n  b: 1\n",
    "".join(f"{' ' * 2 * i}k{i}:\n" for i in range(60)) + " " * 120 + "v: 1\n",  # deeper than MAX_DEPTH
]


@pytest.mark.parametrize("text", LEFT_TO_THE_STRICT_READER)
def test_texts_outside_the_subset_go_to_the_strict_reader(text: str) -> None:
    assert yamlfast.read(text) is None
    (fast_docs, fast_fatal), (docs, fatal) = yamlfast.load_documents(text), yamlsafe.load_documents(text)
    assert fast_docs == docs
    assert (fast_fatal and fast_fatal.issue) == (fatal and fatal.issue)


SCALARS = st.sampled_from([
    "1", "-1", "0x1f", "0o7", "1.5", "1e3", "-.inf", "true", "False", "null", "Null", "yes", "512M",
    "52:54:00:00:00:01", "x y", "\"q: #\"", "'s'", "''", "/p", "-x", "a=b", "u@h", "x", "1:2", "0x",
    "~", ".5", "../x", ".inf",
    "{a: 1}", "{a: 1, a: 2}", "{a:1}", "{a: b c}", "[1]", "&a x", "*a", "!x", "|", "x:", "x #c", "x#c",
    "é", "x\ty", "1" * 31,
])
KEYS = st.sampled_from(["a", "b", "k", "k.x/y", "_", "true", "1", "\"q\"", "a b", "-a"])
GOOD_SCALARS = st.sampled_from(["1", "-1", "0x1f", "true", "null", "512M", "x y", "'s'", "\"q: #\"", "x",
                                "{a: 1, b: x}", "{}"])
GOOD_KEYS = st.sampled_from(["a", "b", "k", "k.x/y"])


def _lines(keys: st.SearchStrategy[str], scalars: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
    line = st.tuples(
        st.sampled_from(["", " ", "  ", "   ", "    ", "      "]),
        st.sampled_from(["", "", "- ", "-  ", "-"]),
        st.one_of(st.tuples(keys, st.sampled_from([":", ": ", ":  "]), scalars | st.just("")), scalars),
        st.sampled_from(["", "", " # c", "  ", "#"]),
    ).map(lambda t: t[0] + t[1] + ("".join(t[2]) if isinstance(t[2], tuple) else t[2]) + t[3])
    return st.lists(line | st.sampled_from(["---", "", "# c", "  # c", "...", "--- x"]), max_size=14)


LINES = _lines(KEYS, SCALARS)
MOSTLY_GOOD_LINES = _lines(GOOD_KEYS, GOOD_SCALARS)


@SETTINGS
@given((LINES | MOSTLY_GOOD_LINES).map("\n".join), st.booleans())
def test_random_block_texts_read_as_the_strict_reader_reads_them(text: str, newline: bool) -> None:
    _same_as_strict(text + "\n" if newline else text)


LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40),
    st.text(st.sampled_from("abz09:-./ #'\"@"), max_size=12),
    st.sampled_from(["x", "512M", "a b", "52:54:00:00:00:01", "/srv/x", "1:30", "0x", "yes"]),
)
DATA = st.dictionaries(
    st.text(st.sampled_from("abkz_.-/"), min_size=1, max_size=6),
    st.recursive(LEAVES, lambda inner: st.lists(inner, min_size=1, max_size=3)
                 | st.dictionaries(st.text(st.sampled_from("abk_"), min_size=1, max_size=4), inner,
                                   min_size=1, max_size=3), max_leaves=12),
    min_size=1, max_size=5,
)


@SETTINGS
@given(st.lists(DATA, min_size=1, max_size=3), st.integers(1, 4), st.booleans())
def test_dumped_block_yaml_reads_as_the_strict_reader_reads_it(
    docs: list[dict[str, Any]], indent: int, start: bool
) -> None:
    text = yaml.safe_dump_all(docs, default_flow_style=False, indent=max(indent, 2), explicit_start=start)
    _same_as_strict(text)


BLOCK_LINES = st.lists(st.tuples(st.sampled_from(["", " ", "  ", "   ", "    ", "      "]), st.sampled_from([
    "", "x", "#cloud-config", "users: [{name: ops}]", "k: |", "- k: |-", "a: 'q' # c", "---", "\"s\": 1",
    "x: {a: [1, 2]}", "  trailing  "])).map("".join), max_size=8)


@SETTINGS
@given(st.sampled_from(["a: ", "- a: ", "  - a: ", "l:\n  - k: ", "m:\n  k: "]), st.sampled_from(["|", "|-"]),
       BLOCK_LINES, st.sampled_from(["", "b: 1", "---\nc: 2", "  d: 3", "l:\n  - x"]), st.booleans())
def test_literal_blocks_read_as_the_strict_reader_reads_them(
        head: str, style: str, body: list[str], after: str, newline: bool) -> None:
    text = "\n".join([head + style, *body, after])
    _same_as_strict(text + "\n" if newline else text)


# Reading by shape: from the second document of a shape on, a document's data is made from its values
# alone. These texts repeat shapes (three documents each at least), with values that differ, comments
# and blank lines that stay in the shape, and values the subset does not take in a later document.
SHAPED: list[tuple[str, list[tuple[int, Any]]]] = [
    ("a: 1\nb:\n  c: x\n---\na: 2\nb:\n  c: y\n---\na: 3\nb:\n  c: z\n",
     [(0, {"a": 1, "b": {"c": "x"}}), (4, {"a": 2, "b": {"c": "y"}}), (8, {"a": 3, "b": {"c": "z"}})]),
    ("---\n# c\na: x # one\nl:\n  - k: 1\n    m: {p: 1}\n" * 3,
     [(2, {"a": "x", "l": [{"k": 1, "m": {"p": 1}}]}), (8, {"a": "x", "l": [{"k": 1, "m": {"p": 1}}]}),
      (14, {"a": "x", "l": [{"k": 1, "m": {"p": 1}}]})]),
    ("a: 1\n---\na: 'two'\n---\na: \"x: #y\"  \n---\na: null\n---\na: true # t\n",
     [(0, {"a": 1}), (2, {"a": "two"}), (4, {"a": "x: #y"}), (6, {"a": None}), (8, {"a": True})]),
    ("a:   # c: d\n  b: 1\n---\na:   # c: d\n  b: 2\n---\na:   # c: d\n  b: 3\n",  # a `: ` in a comment
     [(0, {"a": {"b": 1}}), (3, {"a": {"b": 2}}), (6, {"a": {"b": 3}})]),
    ("l:\n  - x: 1\n  - y\n---\nl:\n  - x: 2\n  - y\n---\nl:\n  - x: 3\n  - y\n",
     [(0, {"l": [{"x": 1}, "y"]}), (4, {"l": [{"x": 2}, "y"]}), (8, {"l": [{"x": 3}, "y"]})]),
    ("l:\n  - \"q: 1\"\n---\nl:\n  - \"q: 2\"\n---\nl:\n  - \"q: 3\"\n",  # a `: ` inside an item's quotes
     [(0, {"l": ["q: 1"]}), (3, {"l": ["q: 2"]}), (6, {"l": ["q: 3"]})]),
    ("p: {a: 1}\n---\np: {a: 2, b: x}\n---\np: {}\n",
     [(0, {"p": {"a": 1}}), (2, {"p": {"a": 2, "b": "x"}}), (4, {"p": {}})]),
]


@pytest.mark.parametrize(("text", "expected"), SHAPED)
def test_documents_of_one_shape_read_as_the_strict_reader_reads_them(
    text: str, expected: list[tuple[int, Any]]
) -> None:
    for _ in range(2):  # the shapes unknown, then known to the process
        docs = _same_as_strict(text)
        assert docs is not None
        assert [(d.index, d.line, d.column, d.data) for d in docs] == [
            (i, line, 0, data) for i, (line, data) in enumerate(expected)]


SHAPED_LEFT_TO_THE_STRICT_READER = [
    "a: 1\n---\na: 2\n---\na: [3]\n", "a: 1\n---\na: 2\n---\na: b: c\n", "a: 1\n---\na: 2\n---\na: &x 1\n",
    "a: 1\n---\na: 2\n---\na: 1234567890123456789012345678901\n", "a: 1\n---\na: 2\n---\na: {b: 1, b: 2}\n",
    "a: 1\n---\na: 2\n---\na: x  y\n", "a: 1\n---\na: 2\n---\na: 'it''s'\n", "a: 1\n---\na: 2\n---\n",
    "a: 1\n---\na: 2\n---\na: 3\na: 4\n", "a: 1\n---\na: 2\n---\n---\na: 3\n",
]


@pytest.mark.parametrize("text", SHAPED_LEFT_TO_THE_STRICT_READER)
def test_a_later_document_outside_the_subset_sends_the_text_to_the_strict_reader(text: str) -> None:
    for _ in range(2):
        assert yamlfast.read(text) is None


def test_a_value_outside_the_subset_in_a_known_shape_is_reported_where_it_is() -> None:
    from reconciler.manifest.parse import parse_file

    good = instance(name="vm-{i}", mac="52:54:00:00:00:0{i}")
    text = "---\n".join(good.format(i=i) for i in range(3)) + "---\n" + good.format(i=3).replace(
        "name: vm-3", "name: [vm-3]")
    lines = good.count("\n") + 1
    parsed = parse_file("m.yaml", text.encode())
    assert [(p.line, p.column, p.message) for p in parsed.problems] == [
        (3 * lines + 4, 3, "['vm-3'] is not a string")]
    assert [d.name for d in parsed.documents] == ["vm-0", "vm-1", "vm-2", ""]


SHAPE_LINE = st.tuples(
    st.sampled_from(["", "  ", "    "]), st.sampled_from(["", "- "]),
    st.sampled_from(["a", "b", "k"]), st.sampled_from([":", ": ", ":  "]), st.booleans(),
    st.sampled_from(["", " # c", " # c: d"]),
)


@SETTINGS
@given(st.lists(SHAPE_LINE, min_size=1, max_size=8), st.lists(st.lists(SCALARS | GOOD_SCALARS,
       min_size=8, max_size=8), min_size=3, max_size=5), st.booleans())
def test_random_documents_of_one_shape_read_as_the_strict_reader_reads_them(
    shape: list[tuple[str, str, str, str, bool, str]], values: list[list[str]], start: bool
) -> None:
    docs = []
    for doc_values in values:
        lines = [f"{indent}{dash}{key}{colon}{value if has and colon != ':' else ''}{comment}"
                 for (indent, dash, key, colon, has, comment), value in zip(shape, doc_values, strict=False)]
        docs.append("\n".join(lines) + "\n")
    text = ("---\n" if start else "") + "---\n".join(docs)
    _same_as_strict(text)
    _same_as_strict(text)


def test_long_documents_are_read_line_by_line_and_their_shapes_not_kept() -> None:
    doc = "".join(f"k{i}: v{i}\n" for i in range(8000))
    assert len(doc) > yamlfast.MAX_SHAPE_CHARS
    docs = _same_as_strict("---\n".join([doc] * 3))
    assert docs is not None
    assert [(d.line, len(d.data)) for d in docs] == [(0, 8000), (8001, 8000), (16002, 8000)]
    assert all(len(shape) <= yamlfast.MAX_SHAPE_CHARS for shape in yamlfast._shapes)
