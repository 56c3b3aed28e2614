"""Keep checking a document that failed the schema: cut out the broken fields, build from the rest.

Users want every problem in one run, including the semantic ones (a bad VNC address) of a document whose
memory field is also misspelt. The builder assumes schema-valid input, so the fields with schema errors
are cut out first: at the nearest point that keeps list indices stable (a whole list is cut, never one
item), and a missing required field cuts its parent. Builder issues inside a cut are dropped: the
schema already reported that spot.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

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


class _Issue(Protocol):
    @property
    def path(self) -> FieldPath: ...
    @property
    def missing(self) -> bool: ...


def settle(
    body: dict[str, Any],
    cuts: tuple[FieldPath, ...],
    validate: Callable[[Any], Sequence[_Issue]],
    rounds: int = 4,
) -> tuple[FieldPath, ...] | None:
    """Cuts after which the rest of `body` is schema-valid, or None. Cutting a wrong-typed required field
    (`stateDir: 5`) leaves it missing, which cuts its parent in the next round (or gives up)."""
    for _ in range(rounds):
        left = validate(without(body, cuts))
        if not left:
            return cuts
        more = cut_points([i.path for i in left if not i.missing], [i.path for i in left if i.missing])
        if more is None:
            return None
        cuts = tuple(sorted(set(cuts) | set(more), key=str))
    return None
