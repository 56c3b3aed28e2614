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
from reconciler.planner.policy import DIFFED_FIELDS, FieldPolicy, change_class, grown_only


def as_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), separators=(",", ":"))


def _is_record(value: Any) -> bool:
    return is_dataclass(value) and not isinstance(value, type)


# Lists whose entries have an identity: when an entry is added or removed, the others are matched by it
# (a disk by its path, a NIC by its MAC), so the plan shows `disks[1]: null -> {...}` and not the lists.
_KEYS = {"disks": "path", "nics": "mac"}


def _walk(path: str, old: Any, new: Any) -> Iterator[tuple[str, Any, Any]]:
    if old == new:
        return
    key = _KEYS.get(path)
    if key is not None and isinstance(old, tuple) and isinstance(new, tuple) and len(old) != len(new):
        yield from _walk_keyed(path, key, old, new)
    elif _is_record(old) and _is_record(new) and type(old) is type(new):
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


def _walk_keyed(path: str, key: str, old: tuple[Any, ...],
                new: tuple[Any, ...]) -> Iterator[tuple[str, Any, Any]]:
    """Removed entries at their old index (new: null), then kept and added ones at their new index."""
    was = {getattr(o, key): o for o in old}
    now = {getattr(n, key) for n in new}
    for i, o in enumerate(old):
        if getattr(o, key) not in now:
            yield f"{path}[{i}]", o, None
    for i, n in enumerate(new):
        o = was.get(getattr(n, key))
        if o is None:
            yield f"{path}[{i}]", None, n
        else:
            yield from _walk(f"{path}[{i}]", o, n)


def diff_specs(old: InstanceSpec, new: InstanceSpec,
               boot: InstanceSpec | None = None) -> tuple[FieldChange, ...]:
    """Every difference except `node`, in model field order; restart-forcing ones are flagged, and so are
    the ones the running QEMU (with `old`, started as `boot`, None: as `old`) can take live
    (policy.change_class)."""
    if old == new:
        return ()
    changes: list[FieldChange] = []
    for name in DIFFED_FIELDS:
        o_value, n_value = getattr(old, name), getattr(new, name)
        if o_value == n_value:
            continue
        cls = change_class(name, old, new, boot)
        restart, live = cls is FieldPolicy.RESTART, cls is FieldPolicy.LIVE
        if name == "cloud_init":  # user-data may hold secrets: the plan shows the seed's digest only
            changes.append(FieldChange(name, seed_text(old), seed_text(new), restart))
            continue
        if name == "disks" and grown_only(old.disks, new.disks):
            restart = False  # only sizes grew: resized live (block_resize), an in-place update
        for path, o, n in _walk(name, o_value, n_value):
            changes.append(FieldChange(path, as_json(o), as_json(n), restart, live=live))
    return tuple(changes)


def seed_text(spec: InstanceSpec) -> str:
    """A seed as plans show it, as JSON text: "seed sha256:<12 hex> (instance-id <id>)", or null."""
    if spec.cloud_init is None:
        return "null"
    from reconciler.provision.seed import DIGEST_CHARS, build_seed, seed_spec

    seed = build_seed(spec.name, seed_spec(spec.cloud_init))
    return json.dumps(f"seed sha256:{seed.digest[:DIGEST_CHARS]} (instance-id {seed.instance_id})")


def restart_forcing(changes: tuple[FieldChange, ...]) -> bool:
    return any(c.forces_restart for c in changes)
