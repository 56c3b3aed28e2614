"""Keep checking a document that failed the schema: cut out the broken fields, build from the rest.

Users want every problem in one run, including the semantic ones (a bad VNC address) of a document whose
memory field is also misspelt. The builder assumes schema-valid input, so the fields with schema errors
are cut out first: at the nearest point that keeps list indices stable (a whole list is cut, never one
item), and a missing required field cuts its parent. Builder issues inside a cut are dropped: the
schema already reported that spot.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

FieldPath = tuple[str | int, ...]


def cut_points(
    error_paths: Iterable[FieldPath], missing: Iterable[FieldPath]
) -> tuple[FieldPath, ...] | None:
    """Where to cut for these schema errors; None when the document cannot be built at all."""
    cuts: list[FieldPath] = []
    for path, is_missing in [(p, False) for p in error_paths] + [(p, True) for p in missing]:
        cut = path[:-1] if is_missing else path
        first_index = next((i for i, part in enumerate(cut) if isinstance(part, int)), len(cut))
        cut = cut[:first_index]
        if len(cut) < 2 or (cut[0] != "spec" and cut[:2] != ("metadata", "labels")):
            return None  # identity (apiVersion, kind, metadata.name) or the spec itself is broken
        cuts.append(cut)
    return tuple(sorted(set(cuts), key=str))


def without(body: dict[str, Any], cuts: Sequence[FieldPath]) -> dict[str, Any]:
    """A copy of `body` with the fields at `cuts` removed (`body` is left untouched)."""
    if not cuts:
        return body
    cleaned = copy.deepcopy(body)
    for cut in cuts:
        parent: Any = cleaned
        for part in cut[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent.pop(cut[-1], None)
    return cleaned


def inside(path: FieldPath, cuts: Iterable[FieldPath]) -> bool:
    """Whether `path` is in, or contains, a cut part (an issue there is already reported)."""
    return any(path[: len(c)] == c or c[: len(path)] == path for c in cuts)
