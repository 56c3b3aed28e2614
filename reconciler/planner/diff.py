"""Field-by-field differences between a recorded spec and a desired one.

Nested records (kernel, vnc, migration) and same-length lists of records (disks, nics) are walked so
a plan can say `disks[0].cache` rather than "disks changed"; anything else is compared whole.
Values are rendered as compact JSON text, which keeps FieldChange hashable and printable as is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from typing import Any

from reconciler.model import InstanceSpec, to_jsonable
from reconciler.planner.actions import FieldChange
from reconciler.planner.policy import DIFFED_FIELDS, FieldPolicy, change_class


def as_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), separators=(",", ":"))


def _is_record(value: Any) -> bool:
    return is_dataclass(value) and not isinstance(value, type)


def _walk(path: str, old: Any, new: Any) -> Iterator[tuple[str, Any, Any]]:
    if old == new:
        return
    if _is_record(old) and _is_record(new) and type(old) is type(new):
        for f in fields(old):
            yield from _walk(f"{path}.{f.name}", getattr(old, f.name), getattr(new, f.name))
    elif (
        isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new)
        and all(_is_record(v) for v in old + new)
    ):
        for i, (o, n) in enumerate(zip(old, new, strict=True)):
            yield from _walk(f"{path}[{i}]", o, n)
    else:
        yield path, old, new


def diff_specs(old: InstanceSpec, new: InstanceSpec) -> tuple[FieldChange, ...]:
    """Every difference except `node`, in model field order; restart-forcing ones are flagged, and so are
    the ones the running QEMU (started as `old`) can take live (policy.change_class)."""
    if old == new:
        return ()
    changes: list[FieldChange] = []
    for name in DIFFED_FIELDS:
        o_value, n_value = getattr(old, name), getattr(new, name)
        if o_value == n_value:
            continue
        cls = change_class(name, old, new)
        restart, live = cls is FieldPolicy.RESTART, cls is FieldPolicy.LIVE
        for path, o, n in _walk(name, o_value, n_value):
            changes.append(FieldChange(path, as_json(o), as_json(n), restart, live=live))
    return tuple(changes)


def restart_forcing(changes: tuple[FieldChange, ...]) -> bool:
    return any(c.forces_restart for c in changes)
