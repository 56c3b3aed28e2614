"""A pure stand-in for a successful apply: the actual state a plan leaves behind."""

from __future__ import annotations

from dataclasses import replace

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.model import DesiredState, InstanceSpec
from reconciler.planner import ActionKind, Plan
from reconciler.planner.policy import record_spec


def simulate(plan: Plan, actual: ActualState, desired: DesiredState) -> ActualState:
    """Apply `plan` to `actual` as the executor would, recording what it records."""
    recs = {(r.name, r.node): r for r in actual.instances}

    def run(name: str, node: str, spec_from: ActualInstance | None) -> None:
        spec = spec_from.spec if spec_from is not None else desired.instances[name]
        recs[(name, node)] = ActualInstance(name, node, RunState.RUNNING, spec, pid=4242)

    def stop(name: str, node: str) -> None:
        old = recs[(name, node)]
        recs[(name, node)] = replace(old, state=RunState.STOPPED, pid=None, stop_cause=StopCause.RECONCILER,
                                     spec=merged(old, node))

    def merged(old: ActualInstance, node: str) -> InstanceSpec | None:
        """The kept record takes the fields that need no restart (stop.finish, update.update_record)."""
        spec = desired.instances.get(old.name)
        return old.spec if old.spec is None or spec is None else record_spec(old.spec, spec, node)

    for action in sorted(plan.actions, key=lambda a: a.phase):
        name, node = action.name, action.node
        if action.kind is ActionKind.STOP:
            stop(name, node)
        elif action.kind is ActionKind.START:
            run(name, node, None)
        elif action.kind is ActionKind.RESTART:
            if action.source_node is not None:
                stop(name, action.source_node)
            run(name, node, None)
        elif action.kind is ActionKind.MIGRATE:
            assert action.source_node is not None
            source = recs.pop((name, action.source_node))
            run(name, node, replace(source, spec=merged(source, node)))  # the recorded configuration
        elif action.kind is ActionKind.UPDATE:
            old = recs[(name, node)]
            recs[(name, node)] = replace(old, spec=merged(old, node))
    return ActualState(instances=tuple(recs[k] for k in sorted(recs)), unmanaged=actual.unmanaged)
