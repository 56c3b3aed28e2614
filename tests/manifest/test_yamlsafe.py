"""The strict YAML layer: YAML 1.2 core scalars, plain data only, problems instead of surprises."""

from __future__ import annotations

import math

import pytest

from reconciler.manifest import yamlsafe


def _value(text: str) -> object:
    docs, fatal = yamlsafe.load_documents(f"v: {text}\n")
    assert fatal is None and docs[0].issues == ()
    return docs[0].data["v"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("52:54:00:12:34:56", "52:54:00:12:34:56"),  # YAML 1.1 would make this a sexagesimal int
        ("yes", "yes"),  # YAML 1.1 would make it True
        ("on", "on"),
        ("2024-01-01", "2024-01-01"),  # no datetime
        ("true", True),
        ("False", False),
        ("~", None),
        ("null", None),
        ("", None),
        ("010", 10),  # decimal, not YAML 1.1 octal
        ("0o17", 15),
        ("0x1F", 31),
        ("-5", -5),
        ("1_000", "1_000"),
        ("1.5", 1.5),
        ("1e3", 1000.0),
        ("-.inf", -math.inf),
        ("'123'", "123"),
        ('"true"', "true"),
        ("!!str 123", "123"),
        ("!!int '7'", 7),
        ("[a, {b: c}]", ["a", {"b": "c"}]),
    ],
)
def test_scalars(text: str, value: object) -> None:
    assert _value(text) == value
    assert type(_value(text)) is type(value)


def test_nan() -> None:
    assert math.isnan(_value(".nan"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "issue"),
    [
        (
            "a: !!python/object/apply:os.system [echo]\n",
            (0, 3, "tag !!python/object/apply:os.system is not allowed (plain data only)"),
        ),
        ("a: !!set {x}\n", (0, 3, "tag !!set is not allowed (plain data only)")),
        ("a: !!timestamp 2024-01-01\n", (0, 3, "tag !!timestamp is not allowed (plain data only)")),
        ("a: !!int abc\n", (0, 3, "'abc' is not a valid int")),
        ("a: !local x\n", (0, 3, "tag !local is not allowed (plain data only)")),
        ("a: 1\nb: 2\na: 3\n", (2, 0, "duplicate key 'a' (first at line 1)")),
        ("x:\n  a: 1\n  a: 1\n", (2, 2, "duplicate key 'a' (first at line 2)")),
        ("1: a\n", (0, 0, "key 1 is not a string")),
        ("null: a\n", (0, 0, "key None is not a string")),
        ("? [a]\n: b\n", (0, 2, "key ['a'] is not a string")),
        (
            "a: 1234567890123456789012345678901\n",
            (0, 3, "number 12345678901234567890... is longer than 30 characters"),
        ),
    ],
)
def test_refused(text: str, issue: tuple[int, int, str]) -> None:
    docs, fatal = yamlsafe.load_documents(text)
    assert fatal is None
    assert [(i.line, i.column, i.message) for i in docs[0].issues] == [issue]


def test_aliases_within_limits_are_shared_not_copied() -> None:
    docs, _ = yamlsafe.load_documents("a: &x [1, 2]\nb: *x\n")
    assert docs[0].data == {"a": [1, 2], "b": [1, 2]}
    assert docs[0].data["a"] is docs[0].data["b"]


def test_merge_keys_are_plain_keys() -> None:
    docs, _ = yamlsafe.load_documents("a: &x {k: 1}\nb:\n  <<: *x\n")
    assert docs[0].data["b"] == {"<<": {"k": 1}}  # the schema then rejects '<<' as an unknown field


def test_documents_keep_their_start_and_index() -> None:
    docs, fatal = yamlsafe.load_documents("# c\na: 1\n---\nb: 2\n--- 3\n")
    assert fatal is None
    assert [(d.index, d.line, d.column, d.data) for d in docs] == [
        (0, 1, 0, {"a": 1}),
        (1, 3, 0, {"b": 2}),
        (2, 4, 4, 3),
    ]


def test_syntax_error_keeps_earlier_documents() -> None:
    docs, fatal = yamlsafe.load_documents("a: 1\n---\nb: [\n")
    assert [d.data for d in docs] == [{"a": 1}]
    assert fatal is not None and (fatal.issue.line, fatal.issue.column) == (3, 0)


@pytest.mark.parametrize("depth", [50, 600, 6000, 60000])
def test_deep_nesting_never_crashes(depth: int) -> None:
    docs, fatal = yamlsafe.load_documents("[" * depth + "]" * depth)
    problems = [i.message for d in docs for i in d.issues] + ([fatal.issue.message] if fatal else [])
    if depth == 50:
        assert problems == []
    else:
        assert problems in (["nesting too deep"], ["nesting deeper than 100 levels"])


# Where libyaml departs from YAML 1.2 (issue 11), the loader gives the spec's data or a one-line error at
# the offending token: never silently different data. Expected values are the YAML 1.2 reading (as the
# yaml-test-suite has it: JEF9, L24T for block scalars at the end of the input).
@pytest.mark.parametrize(
    ("text", "data"),
    [
        ("- ! 12\n", ["12"]),  # '!' is the non-specific tag: a string, not an int
        ('- ! "12"\n', ["12"]),
        ("a: ! true\n", {"a": "true"}),
        ("a: ! ~\n", {"a": "~"}),
        ("a: !\n", {"a": ""}),
        ("a: !\n  12\n", {"a": "12"}),
        ("- &a ! 12\n- *a\n", ["12", "12"]),
        ("- ! &a 12\n", ["12"]),
        ("a: ! [1, x]\n", {"a": [1, "x"]}),  # on a collection it only says seq/map
        ("a: 12\nb: &n 12\n", {"a": 12, "b": 12}),  # no tag, still a number
        ("a: |\n  x\n   ", {"a": "x\n \n"}),  # a trailing space line at the end of the input (L24T)
        ("a: |\n  x\n    ", {"a": "x\n  \n"}),
        ("a: >\n  x\n    ", {"a": "x\n  \n"}),
        ("- |+\n   ", ["\n"]),  # JEF9
        ("a: |+\n  x\n   ", {"a": "x\n \n"}),
        ("a: |-\n  x\n    ", {"a": "x\n  "}),
        ("a: |\n  x", {"a": "x\n"}),  # a missing final line break changes nothing
        ("a: |\n  x\n   \n", {"a": "x\n \n"}),
    ],
)
def test_yaml_1_2_data_where_libyaml_departs(text: str, data: object) -> None:
    docs, fatal = yamlsafe.load_documents(text)
    assert fatal is None and [d.issues for d in docs] == [()]
    assert docs[0].data == data


@pytest.mark.parametrize(
    ("text", "issue"),
    [
        (
            "{ ?foo: bar }\n",
            (0, 2, "'?foo' in a flow collection: YAML 1.2 reads it as text, this parser as a key; "
                   "quote it, or write '? foo' for a key"),
        ),
        (
            "[?x]\n",
            (0, 1, "'?x' in a flow collection: YAML 1.2 reads it as text, this parser as a key; "
                   "quote it, or write '? x' for a key"),
        ),
        (
            "a: [b, ?c: d]\n",
            (0, 7, "'?c' in a flow collection: YAML 1.2 reads it as text, this parser as a key; "
                   "quote it, or write '? c' for a key"),
        ),
        (
            "key: &an:chor value\n",
            (0, 5, "anchor '&an:chor': YAML 1.2 reads the whole name, this parser stops at ':'; "
                   "use letters, digits, '-' and '_' only"),
        ),
        (
            "a: &x v\nb: [*x:y]\n",
            (1, 4, "alias '*x:y': YAML 1.2 reads the whole name, this parser stops at ':'; "
                   "use letters, digits, '-' and '_' only"),
        ),
        (
            "a: 1\n---\nb: {?x: 1}\n",
            (2, 4, "'?x' in a flow collection: YAML 1.2 reads it as text, this parser as a key; "
                   "quote it, or write '? x' for a key"),
        ),
    ],
)
def test_libyaml_departures_are_errors(text: str, issue: tuple[int, int, str]) -> None:
    docs, fatal = yamlsafe.load_documents(text)
    assert fatal is None
    found = [(i.line, i.column, i.message) for d in docs for i in d.issues]
    assert found == [issue]
    assert docs[-1].issues  # the issue belongs to the document it is in


@pytest.mark.parametrize(
    "text",
    [
        "a: '?x'\nb: [\"?y\", '&z:w']\n",  # quoted: no departure
        "a: {? x : y}\n",  # an explicit key, spelt as both readings agree
        "a: x?y\nb: {c: d?e}\n",
        "? x\n: y\n",  # block context: libyaml agrees with YAML 1.2
        "a: &x-y_1 1\nb: *x-y_1\n",
        "a: &x [1]\nb: *x\n",
        "cmdline: 'a&b:c *d:e ?f'\n",
    ],
)
def test_no_false_departures(text: str) -> None:
    docs, fatal = yamlsafe.load_documents(text)
    assert fatal is None and [d.issues for d in docs] == [()]
