"""Diagnostics: one `Problem` per thing wrong with the manifests, printed as one line.

Every stage of loading (discovery, YAML, schema, semantic rules) reports through this one type, so the
CLI can print all problems of a run at once, sorted, in the compiler-style format editors understand:

    path/to/file.yaml:12:5: instance web1: spec.memory: '12X' is not a size like 512M or 2G
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from reconciler.values import Value

_MAX_MESSAGE = 400


def one_line(text: str, limit: int = _MAX_MESSAGE) -> str:
    """`text` without line breaks or control characters, shortened to `limit` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def show(value: object, limit: int = 60) -> str:
    """A user's value quoted for a message ('12X', 5, True), never longer than about `limit`."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_path(path: Sequence[str | int]) -> str:
    """('spec', 'disks', 0, 'path') -> 'spec.disks[0].path'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Severity(enum.StrEnum):
    ERROR = "error"  # the manifests cannot be used
    WARNING = "warning"  # printed, but the manifests are valid (validate exits 0)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Problem(Value):
    """One error (or warning) in the manifests. `line`/`column` are 1-based (0 = unknown); `kind` is
    "Instance" etc. A warning prints as `file:line:col: warning: ...`."""

    path: str
    line: int = 0
    column: int = 0
    kind: str = ""
    name: str = ""
    field: str = ""
    message: str = ""
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.column}" if self.line else self.path
        parts = [one_line(where, 4096)]
        if self.severity is Severity.WARNING:
            parts.append("warning")
        if self.kind:
            parts.append(f"{self.kind.lower()} {self.name}" if self.name else self.kind.lower())
        if self.field:
            parts.append(self.field)
        parts.append(self.message)
        return one_line(": ".join(parts), 8192)

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.path, self.line, self.column, str(self))

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "name": self.name,
            "field": self.field,
            "message": self.message,
            "severity": self.severity.value,
            "text": str(self),
        }
