"""A plan as versioned JSON (format_version "1.0", documented in docs/plan-json.md), and back.

Keys come out in a fixed order so the same plan gives the same bytes. `plan_from_dict` inverts
`plan_to_dict` for saved plans; it raises KeyError, TypeError or ValueError on malformed data.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from reconciler import __version__
from reconciler.actual import Reach, UnreachableNode
from reconciler.model import MigrationMode, SourceRef
from reconciler.planner.actions import (
    Action,
    ActionKind,
    DiskChange,
    DiskOp,
    FieldChange,
    Handoff,
    Held,
    Orphan,
    OrphanFate,
    PendingChange,
    Plan,
    PlanProblem,
    ProblemKind,
    Reason,
)
from reconciler.planner.diff import as_json

if TYPE_CHECKING:
    from reconciler.gitinfo import GitInfo

FORMAT_VERSION = "1.0"


def _change(c: FieldChange) -> dict[str, Any]:
    return {"path": c.path, "old": json.loads(c.old), "new": json.loads(c.new),
            "forces_restart": c.forces_restart, "class": c.change_class.value}


def _action(a: Action) -> dict[str, Any]:
    extra: dict[str, Any] = {"extra_args": list(a.extra_args)} if a.extra_args else {}  # escape hatch used
    if a.handoffs:  # only when the action waits for another instance to release something
        extra["handoffs"] = [{"instance": h.instance, "resource": h.resource} for h in a.handoffs]
    if a.by_signal:  # only on a stop of a process whose QMP does not answer (added in 1.0; absent: false)
        extra["by_signal"] = True
    if a.leftovers:  # only on an update after a live change killed halfway (absent: none)
        extra["leftovers"] = list(a.leftovers)
    return {
        "name": a.name,
        "kind": a.kind.value,
        "symbol": a.kind.symbol,
        "reason": a.reason.value,
        "reason_text": a.reason.words,
        "node": a.node,
        "source_node": a.source_node,
        "phase": a.phase,
        "in_place": a.in_place,
        "clean_stale": a.clean_stale,
        "migration_mode": a.migration_mode.value if a.migration_mode else None,
        "max_bandwidth": a.max_bandwidth or None,
        "memory_mib": a.memory_mib,
        "changes": [_change(c) for c in a.changes],
        **extra,
    }


def _where(where: SourceRef | None) -> dict[str, Any] | None:
    return None if where is None else {"path": where.path, "line": where.line, "column": where.column}


def git_to_dict(git: GitInfo | None) -> dict[str, Any] | None:
    return None if git is None else {"root": git.root, "commit": git.commit, "dirty": git.dirty}


def plan_to_dict(plan: Plan, git: GitInfo | None = None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "reconciler_version": __version__,
        "git": git_to_dict(git),
        "prune": plan.prune,
        "targets": list(plan.targets) if plan.targets is not None else None,
        "summary": {k.value: plan.count(k) for k in
                    (ActionKind.START, ActionKind.RESTART, ActionKind.MIGRATE, ActionKind.STOP,
                     ActionKind.UPDATE)},
        "empty": plan.empty,
        "actions": [_action(a) for a in plan.actions],
        "pending": [{"name": p.name, "node": p.node, "reason": p.reason.value, "reason_text": p.reason.words,
                     "changes": [_change(c) for c in p.changes]} for p in plan.pending],
        "orphans": [{"name": o.name, "node": o.node, "state": o.state, "fate": o.fate.value}
                    for o in plan.orphans],
        "warnings": list(plan.warnings),
        "unreachable": [u.to_json() for u in plan.unreachable],
        "held": [{"name": h.name, "node": h.node, "reason": h.reason} for h in plan.held],
        "errors": [{"kind": e.kind.value, "subject": e.subject, "detail": e.detail, "message": e.message,
                    "where": _where(e.where)} for e in plan.errors],
        # disk images created or deleted (added in 1.0, issue 14; absent: none)
        **({"disks": [_disk(d) for d in plan.disks]} if plan.disks else {}),
    }


def _disk(d: DiskChange) -> dict[str, Any]:
    return {"instance": d.instance, "node": d.node, "path": d.path, "op": d.op.value, "size": d.size,
            "base": d.base, "base_format": d.base_format, "format": d.format, "reason": d.reason or None}


def _disk_from(d: dict[str, Any]) -> DiskChange:
    size = d.get("size")
    return DiskChange(str(d["instance"]), str(d["node"]), str(d["path"]), DiskOp(d["op"]),
                      int(size) if size is not None else None, _str_or_none(d.get("base")),
                      _str_or_none(d.get("base_format")), str(d.get("format") or "qcow2"),
                      str(d.get("reason") or ""))


def render_json(plan: Plan, git: GitInfo | None = None) -> str:
    return json.dumps(plan_to_dict(plan, git), indent=2) + "\n"


# --- reading back --------------------------------------------------------------------------------


def _change_from(d: dict[str, Any]) -> FieldChange:
    return FieldChange(str(d["path"]), as_json(d["old"]), as_json(d["new"]), bool(d["forces_restart"]),
                       live=d.get("class") == "live")


def _str_or_none(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {value!r}")
    return value


def _where_from(d: dict[str, Any] | None) -> SourceRef | None:
    return None if d is None else SourceRef(str(d["path"]), int(d["line"]), int(d["column"]))


def _action_from(d: dict[str, Any]) -> Action:
    mode = _str_or_none(d["migration_mode"])
    return Action(
        name=str(d["name"]), kind=ActionKind(d["kind"]), reason=Reason(d["reason"]), node=str(d["node"]),
        source_node=_str_or_none(d["source_node"]), changes=tuple(_change_from(c) for c in d["changes"]),
        phase=int(d["phase"]), in_place=bool(d["in_place"]), clean_stale=bool(d["clean_stale"]),
        migration_mode=MigrationMode(mode) if mode is not None else None, memory_mib=int(d["memory_mib"]),
        max_bandwidth=int(d.get("max_bandwidth") or 0),
        extra_args=tuple(str(x) for x in d.get("extra_args", ())),
        handoffs=tuple(Handoff(str(h["instance"]), str(h["resource"])) for h in d.get("handoffs", ())),
        by_signal=bool(d.get("by_signal", False)),
        leftovers=tuple(str(x) for x in d.get("leftovers", ())),
    )


def plan_from_dict(data: dict[str, Any]) -> Plan:
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported plan format_version {data.get('format_version')!r}")
    targets = data["targets"]
    return Plan(
        actions=tuple(_action_from(a) for a in data["actions"]),
        pending=tuple(PendingChange(str(p["name"]), str(p["node"]), Reason(p["reason"]),
                                    tuple(_change_from(c) for c in p["changes"])) for p in data["pending"]),
        orphans=tuple(Orphan(str(o["name"]), str(o["node"]), str(o["state"]), OrphanFate(o["fate"]))
                      for o in data["orphans"]),
        errors=tuple(PlanProblem(ProblemKind(e["kind"]), str(e["subject"]), str(e["detail"]),
                                 _where_from(e.get("where"))) for e in data["errors"]),
        warnings=tuple(str(w) for w in data["warnings"]),
        disks=tuple(_disk_from(d) for d in data.get("disks", ())),
        prune=bool(data["prune"]),
        targets=tuple(str(t) for t in targets) if targets is not None else None,
        unreachable=tuple(UnreachableNode(str(u["node"]), Reach(u["reach"]), str(u["detail"]))
                          for u in data.get("unreachable", ())),
        held=tuple(Held(str(h["name"]), _str_or_none(h["node"]), str(h["reason"]))
                   for h in data.get("held", ())),
    )
