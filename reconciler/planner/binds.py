"""Migrations that could not bind their fixed ports on the target, refused at plan time.

A migration target is a second QEMU with the source's recorded configuration, VNC display included, and it
binds that display while the source still holds its own: when the two nodes share an address (one host,
see reconciler.hostports) the target cannot start, whatever the migration port. The same goes for a
display held on the target's host by another live instance that the plan does not stop first. Such a
migration is a plan error with one line saying why, instead of a launch that fails at apply time. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from reconciler import hostports
from reconciler.actual import ActualInstance, ActualState
from reconciler.model import NodeSpec
from reconciler.planner.actions import Action, ActionKind, PlanProblem, ProblemKind


def migration_problems(actions: Sequence[Action], actual: ActualState,
                       nodes: Mapping[str, NodeSpec]) -> list[PlanProblem]:
    """One problem per migration whose target could not bind a fixed port of the migrated instance."""
    out = []
    for action in actions:
        if action.kind is not ActionKind.MIGRATE or action.source_node is None:
            continue
        source, target = nodes.get(action.source_node), nodes.get(action.node)
        rec = _record(actual.instances, action.name, action.source_node)
        if source is None or target is None or rec is None or rec.spec is None:
            continue
        for listener in hostports.fixed_listeners(rec.spec):
            detail = _blocked(action, listener, source, target, actual, actions, nodes)
            if detail is not None:
                move = f"cannot migrate {source.name} -> {target.name}"
                what = f"{listener.what} (port {listener.port} on {target.address})"
                out.append(PlanProblem(ProblemKind.PORT_IN_USE, f"instance {action.name}",
                                       f"{move}: {what} {detail}"))
                break
    return out


def _record(instances: Iterable[ActualInstance], name: str, node: str) -> ActualInstance | None:
    return next((i for i in instances if i.name == name and i.node == node and i.state.has_process), None)


def _blocked(action: Action, listener: hostports.Listener, source: NodeSpec, target: NodeSpec,
             actual: ActualState, actions: Sequence[Action], nodes: Mapping[str, NodeSpec]) -> str | None:
    """Why the target cannot bind `listener`, or None."""
    if source.address == target.address:
        return (f"stays held by the source until the migration ends ({source.name} and {target.name} "
                f"share the address); change vnc.display with the node to move it by a restart")
    for other in actual.instances:
        if other.name == action.name or not other.state.has_process or other.spec is None:
            continue
        host = nodes.get(other.node)
        if host is None or host.address != target.address or _released_before(other, action, actions):
            continue
        if any(hostports.clash(listener, held) for held in hostports.fixed_listeners(other.spec)):
            return f"is in use by instance {other.name} on {other.node}"
    return None


def _released_before(holder: ActualInstance, action: Action, actions: Sequence[Action]) -> bool:
    """Whether the plan takes `holder`'s process away (a stop, or a move off its node) in an earlier phase."""
    return any(
        a.name == holder.name and a.phase < action.phase
        and ((a.kind is ActionKind.STOP and a.node == holder.node) or a.source_node == holder.node)
        for a in actions
    )
