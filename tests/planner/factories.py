"""Builders for planner tests: desired and actual state constructed directly, no loader."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.model import DesiredState, InstanceSpec, NodeSpec
from reconciler.planner import Plan


def spec(name: str, memory_mib: int = 512, **kw: Any) -> InstanceSpec:
    return InstanceSpec(name=name, memory_mib=memory_mib, **kw)


def node(name: str, memory_mib: int | None = None) -> NodeSpec:
    return NodeSpec(name=name, state_dir=f"/var/lib/reconciler/{name}", memory_mib=memory_mib)


def desired(
    *specs: InstanceSpec, nodes: tuple[NodeSpec, ...] | None = None, prune: bool = False
) -> DesiredState:
    ns = nodes if nodes is not None else (node("a"), node("b"))
    return DesiredState(instances={s.name: s for s in specs}, nodes={n.name: n for n in ns}, prune=prune)


def rec(
    s: InstanceSpec | None,
    node_name: str,
    state: RunState = RunState.RUNNING,
    cause: StopCause | None = None,
    *,
    name: str | None = None,
) -> ActualInstance:
    """A record of `s` (the applied spec) on a node; `name` when the spec is None."""
    return ActualInstance(
        name=name or (s.name if s else "?"), node=node_name, state=state, spec=s,
        pid=1000 if state.has_process else None, stop_cause=cause,
    )


def actual(*recs: ActualInstance) -> ActualState:
    return ActualState(instances=recs)


def brief(plan: Plan) -> list[str]:
    """One compact line per action: 'kind name [src->]node reason [flags]'."""
    lines = []
    for a in plan.actions:
        where = f"{a.source_node}->{a.node}" if a.source_node else a.node
        flags = [f"p{a.phase}"] if a.phase else []
        flags += ["in_place"] if a.in_place else []
        flags += ["clean_stale"] if a.clean_stale else []
        flags += [a.migration_mode.value] if a.migration_mode else []
        lines.append(" ".join([a.kind.value, a.name, where, a.reason.value, *flags]))
    return lines


def changed(s: InstanceSpec, **kw: Any) -> InstanceSpec:
    return replace(s, **kw)
