"""A plan as Terraform-style text: one block per action, then pending, orphans, warnings, errors, summary.

Pure: the caller decides about colour (RenderOptions) and passes the git header if it has one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.planner.actions import (
    Action,
    ActionKind,
    DiskChange,
    DiskOp,
    FieldChange,
    Orphan,
    OrphanFate,
    Plan,
)
from reconciler.units import format_rate
from reconciler.values import Value

if TYPE_CHECKING:
    from reconciler.gitinfo import GitInfo

NO_CHANGES = "No changes. The nodes match the manifests."
NO_CHANGES_REACHABLE = "No changes on the reachable nodes. The unreachable ones were not looked at."

_RESET = "\x1b[0m"
_COLORS = {
    ActionKind.START: "\x1b[32m",  # green
    ActionKind.STOP: "\x1b[31m",  # red
    ActionKind.RESTART: "\x1b[33m",  # yellow
    ActionKind.MIGRATE: "\x1b[36m",  # cyan
    ActionKind.REBOOT: "\x1b[35m",  # magenta
    ActionKind.UPDATE: "\x1b[33m",  # yellow, as Terraform's update in place
    ActionKind.NOOP: "",
}
_BOLD, _RED, _YELLOW = "\x1b[1m", "\x1b[31m", "\x1b[33m"

_FATES = {
    OrphanFate.STOP: "stopped by this plan (pruning is on)",
    OrphanFate.WOULD_STOP: "--prune would stop it",
    OrphanFate.PROTECTED: "protect: true; prune never stops it",
}


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class RenderOptions(Value):
    """How the text plan is rendered."""

    color: bool = False


class _Painter:
    def __init__(self, on: bool) -> None:
        self.on = on

    def __call__(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.on and code else text


def summary(plan: Plan) -> str:
    counts = (
        f"{plan.count(ActionKind.START)} to start, {plan.count(ActionKind.RESTART)} to restart, "
        f"{plan.count(ActionKind.MIGRATE)} to migrate, {plan.count(ActionKind.STOP)} to stop"
    )
    reboots = plan.count(ActionKind.REBOOT)  # only `reconciler reboot` makes them
    if reboots:
        counts += f", {reboots} to reboot"
    updates = plan.count(ActionKind.UPDATE)
    if updates:  # named only when there are some: the usual line stays as it was
        counts += f", {updates} record{'s' if updates != 1 else ''} to update in place (no restart)"
    for op, words in ((DiskOp.CREATE, "to create"), (DiskOp.DELETE, "to delete")):
        n = sum(1 for d in plan.disks if d.op is op)
        if n:
            counts += f", {n} disk image{'s' if n != 1 else ''} {words}"
    return f"Plan: {counts}."


def _header(action: Action) -> str:
    if action.kind is ActionKind.MIGRATE:
        mode = action.migration_mode.value if action.migration_mode else "live"
        cap = f", capped at {format_rate(action.max_bandwidth)}" if action.max_bandwidth else ""
        return f"{action.name} from {action.source_node} to {action.node} ({mode} migration{cap})"
    where = f"from {action.source_node} to {action.node}" if action.source_node else f"on {action.node}"
    if action.kind is ActionKind.UPDATE:
        live = any(c.live for c in action.changes) or bool(action.leftovers)
        return f"{action.name} on {action.node} ({'update' if live else 'record updated'} in place)"
    extra = " (in place: system_reset + cont)" if action.in_place else ""
    if action.kind is ActionKind.REBOOT:
        extra = " (guest reset: system_reset + cont, same QEMU process)"
    return f"{action.name} {where}{extra}"


def _changes(changes: Iterable[FieldChange], paint: _Painter, *, live: bool = True) -> list[str]:
    """`live`: mark the changes made in the running QEMU (not in a start or restart, which makes all)."""
    lines = []
    for c in changes:
        tail = "  " + paint(_RED, "# forces restart") if c.forces_restart else ""
        if c.live and live:
            tail = "  # live"
        lines.append(f"      {c.path}: {c.old} -> {c.new}{tail}")
    return lines


def _actions(plan: Plan, paint: _Painter) -> list[str]:
    phased = any(a.phase for a in plan.actions)
    lines = ["Reconciler will perform the following actions:"]
    for a in plan.actions:
        symbol = paint(_COLORS[a.kind], a.kind.symbol)
        phase = f"  [phase {a.phase}]" if phased else ""
        lines += ["", f"  {symbol} {paint(_BOLD, _header(a))}{phase}", f"      # {a.reason.words}"]
        lines += [f"      # after {h.instance} releases {h.resource}" for h in a.handoffs]
        if a.extra_args:  # the escape hatch: raw QEMU arguments nobody checked, always in view
            lines.append(f"      # qemuExtraArgs (passed to QEMU unchecked): {json.dumps(a.extra_args)}")
        lines += _changes(a.changes, paint, live=a.kind is ActionKind.UPDATE)
        lines += [f"      # QEMU: {left}" for left in a.leftovers]
    return lines


def disk_line(d: DiskChange) -> str:
    """One disk image the plan creates or deletes (never its contents; sizes in binary units)."""
    from reconciler.planner.disks import format_size

    if d.op is DiskOp.DELETE:
        why = f"; {d.reason}" if d.reason else ""
        return (f"- delete {d.path} on {d.node} (of {d.instance}: created by the reconciler, "
                f"deletePolicy Delete{why})")
    size = format_size(d.size) if d.size is not None else "?"
    if d.base is not None:
        made = f"qcow2 overlay on {d.base} ({d.base_format or '?'}; never written), {size}"
    else:
        made = f"blank {d.format}, {size}"
    return f"+ create {d.path} on {d.node} for {d.instance}: {made}"


def _disks(plan: Plan, paint: _Painter) -> list[str]:
    lines = ["Disk images:", ""]
    for d in plan.disks:
        color = _COLORS[ActionKind.START if d.op is DiskOp.CREATE else ActionKind.STOP]
        symbol, rest = disk_line(d).split(" ", 1)
        lines.append(f"  {paint(color, symbol)} {rest}")
    return lines


def _pending(plan: Plan, paint: _Painter) -> list[str]:
    lines = ["Pending changes (not applied by this plan):"]
    for p in plan.pending:
        lines += ["", f"  ~ {paint(_BOLD, p.name)} on {p.node}", f"      # {p.reason.words}"]
        lines += _changes(p.changes, paint)
    return lines


def _orphan(o: Orphan) -> str:
    return f"  {o.name} on {o.node} ({o.state}): {_FATES[o.fate]}"


def render_text(plan: Plan, options: RenderOptions | None = None, git: GitInfo | None = None) -> str:
    """The whole plan as text, ending with a newline."""
    paint = _Painter(options is not None and options.color)
    sections: list[list[str]] = []
    if git is not None:
        state = "uncommitted changes" if git.dirty else "clean"
        sections.append([f"Manifests: commit {git.short} ({state})"])
    if plan.targets is not None:
        sections.append(["Targets: " + ", ".join(plan.targets)])
    if plan.actions:
        sections.append(_actions(plan, paint))
    if plan.disks:
        sections.append(_disks(plan, paint))
    if plan.pending:
        sections.append(_pending(plan, paint))
    if plan.orphans:
        sections.append(["Orphaned instances (not in the manifests):", ""]
                        + [_orphan(o) for o in plan.orphans])
    if plan.unreachable:
        sections.append(["Unreachable nodes (nothing is planned on them):", ""]
                        + [paint(_RED, f"  x {u.line}") for u in plan.unreachable])
    if plan.held:
        sections.append(["Held (left alone while a node is unreachable):", ""]
                        + [f"  {h.name}" + (f" on {h.node}" if h.node else "") + f": {h.reason}"
                           for h in plan.held])
    if plan.warnings:
        sections.append(["Warnings:", ""] + [paint(_YELLOW, f"  ! {w}") for w in plan.warnings])
    if plan.errors:
        sections.append(["Errors:", ""] + [paint(_RED, f"  x {e.message}") for e in plan.errors])
    if plan.errors:
        n = len(plan.errors)
        sections.append([summary(plan), f"{n} error{'s' if n != 1 else ''}: this plan cannot be applied."])
    elif plan.empty:
        sections.append([NO_CHANGES_REACHABLE if plan.unreachable else NO_CHANGES])
    else:
        sections.append([summary(plan)])
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
