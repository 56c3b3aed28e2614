"""YAML 1.2 core scalar rules and the loaded-document types, without libyaml.

Shared by the strict reader (yamlsafe, on libyaml) and the fast reader (yamlfast), so that both resolve
a scalar the same way and a run whose manifests the fast reader takes never imports yaml at all.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from reconciler.values import Value

MAX_NUMBER_CHARS = 30

STR_TAG = "tag:yaml.org,2002:str"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"
INT_RE = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
FLOAT_RE = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
NULLS = frozenset({"~", "null", "Null", "NULL", ""})


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class YamlIssue(Value):
    """Something wrong at a position (0-based line/column as libyaml reports them)."""

    line: int
    column: int
    message: str


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class YamlDocument(Value):
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


def resolve_plain(value: str) -> str:
    """The YAML 1.2 core tag of a plain scalar."""
    if value in NULLS:
        return NULL_TAG
    first = value[0]
    if first in "0123456789-+.":
        if INT_RE.fullmatch(value):
            return INT_TAG
        if FLOAT_RE.fullmatch(value):
            return FLOAT_TAG
    elif value in BOOLS:
        return BOOL_TAG
    return STR_TAG


def plain_value(text: str) -> tuple[Any, bool]:
    """The data of a plain scalar `text` (YAML 1.2 core, as the strict reader resolves it), and whether
    it is valid (False: the strict reader reports an issue for it)."""
    tag = resolve_plain(text)
    if tag == STR_TAG:
        return text, True
    value, message = scalar_value(text, tag)
    return value, message is None


def scalar_value(text: str, tag: str) -> tuple[Any, str | None]:
    """The data of a scalar with a resolved tag other than str, or None and why it is refused."""
    if tag == NULL_TAG and text in NULLS:
        return None, None
    if tag == BOOL_TAG and text in BOOLS:
        return BOOLS[text], None
    if tag in (INT_TAG, FLOAT_TAG) and len(text) > MAX_NUMBER_CHARS:
        return None, f"number {text[:20]}... is longer than {MAX_NUMBER_CHARS} characters"
    if tag == INT_TAG and INT_RE.fullmatch(text):
        base = 16 if text.startswith("0x") else 8 if text.startswith("0o") else 10
        return int(text[2:] if base != 10 else text, base), None
    if tag == FLOAT_TAG and FLOAT_RE.fullmatch(text):
        lowered = text.lower()
        if lowered.endswith(".nan"):
            return math.nan, None
        if lowered.endswith(".inf"):
            return (-math.inf if text.startswith("-") else math.inf), None
        return float(text), None
    if tag in (NULL_TAG, BOOL_TAG, INT_TAG, FLOAT_TAG):
        return None, f"{text!r} is not a valid {tag.rsplit(':', 1)[1]}"
    return None, bad_tag(tag)


def bad_tag(tag: str) -> str:
    shown = "!!" + tag[len("tag:yaml.org,2002:") :] if tag.startswith("tag:yaml.org,2002:") else tag
    return f"tag {shown} is not allowed (plain data only)"
