"""The daemon's side of the executor seam: `ApplyPlan` backed by `reconciler.executor`.

The executor (shared with `apply`) carries out a plan on `Node` objects and reports through the
`Progress` protocol; here its progress lines become log events and its results become the daemon's
`ActionOutcome`s. Discovery goes through the same `Node` objects `apply` uses.
"""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.actual import ActualState
from reconciler.model import DesiredState, NodeSpec
from reconciler.planner import Plan
from reconciler.watch.logfmt import EventLog
from reconciler.watch.reconcile import ActionOutcome


class LogProgress:
    """`executor.progress.Progress` as log events; migration percentages every `step` percent."""

    def __init__(self, log: EventLog, step: float = 25.0) -> None:
        self._log = log
        self._step = step
        self._last: dict[str, float] = {}

    def event(self, instance: str, text: str) -> None:
        self._log.info("action-progress", instance=instance, text=text)

    def percent(self, instance: str, text: str, percent: float) -> None:
        last = self._last.get(instance)
        if last is not None and percent - last < self._step and percent < 100.0:
            return
        self._last[instance] = percent
        self._log.info("action-progress", instance=instance, text=text, percent=round(percent, 1))


class ExecutorApply:
    """Carries out plans with the real executor on local nodes."""

    def __init__(self, log: EventLog, parallel: int = 4) -> None:
        self._log = log
        self._parallel = parallel

    async def __call__(self, plan: Plan, desired: DesiredState,
                       revision: str | None) -> Sequence[ActionOutcome]:
        from reconciler.executor.context import Context
        from reconciler.executor.schedule import run_plan
        from reconciler.node import local_nodes

        nodes = local_nodes([desired.nodes[n] for n in sorted(desired.nodes)])
        ctx = Context(nodes=nodes, specs=desired.instances, progress=LogProgress(self._log),
                      revision=revision)
        summary = await run_plan(plan, ctx, self._parallel)
        return [ActionOutcome(r.action, r.ok, r.detail, r.seconds, r.status.value) for r in summary.results]


async def discover_nodes(nodes: Sequence[NodeSpec]) -> ActualState:
    """The actual state of `nodes`, discovered as `apply` does (one Node at a time, merged)."""
    import asyncio

    from reconciler.node import local_nodes, merge_states

    local = local_nodes(list(nodes))
    return merge_states(list(await asyncio.gather(*(n.discover() for n in local.values()))))
