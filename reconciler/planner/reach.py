"""Which instances a plan must leave alone because a node could not be reached (pure).

A host we cannot reach is reported, never guessed about. Its instances may still run, so:
- an instance declared on an unreachable node gets no action at all (it cannot be started, stopped or
  migrated there, and moving it away would need to know it stopped);
- an instance that runs on no reachable node is not started anywhere while some node is unreachable:
  it may be running on that node, and without fencing a second copy could run on the same disks.
Everything else (instances running on reachable nodes, orphans seen on them) is planned as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from reconciler.actual import ActualInstance, UnreachableNode
from reconciler.model import InstanceSpec, RunStrategy
from reconciler.planner.actions import Held

_NEVER_STARTED = frozenset({RunStrategy.HALTED, RunStrategy.MANUAL})


def held(spec: InstanceSpec, recs: Sequence[ActualInstance],
         unreachable: Mapping[str, UnreachableNode]) -> Held | None:
    """Why `spec` must be left out of the plan, or None to plan it as usual."""
    return held_name(spec.name, spec.node, recs, unreachable, spec.run_strategy not in _NEVER_STARTED)


def held_name(name: str, node: str | None, recs: Sequence[ActualInstance],
              unreachable: Mapping[str, UnreachableNode], may_start: bool) -> Held | None:
    """As `held`, for an instance declared on `node` (None: unscheduled or undeclared) that the plan
    may start (`may_start`: an imperative `start` may, whatever the run strategy)."""
    if not unreachable:
        return None
    if node is not None and node in unreachable:
        return Held(name, node, f"its node {node} is unreachable")
    if not may_start or any(r.state.has_process for r in recs):
        return None
    names = ", ".join(sorted(unreachable))
    return Held(name, node,
                f"not running on any reachable node, and it may be running on {names} "
                f"(unreachable): not started until {'it is' if len(unreachable) == 1 else 'they are'} "
                "back")
