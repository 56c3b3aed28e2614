"""The daemon's side of the executor seam: `ApplyPlan` backed by `reconciler.executor`.

The executor (shared with `apply`) carries out a plan on `Node` objects and reports through the
`Progress` protocol; here its progress lines become log events and its results become the daemon's
`ActionOutcome`s. Every step of a pass (locks, discovery, host checks, executor) goes through the Nodes
of the daemon's fleet (`FleetPass`, over reconciler.watch.hosts): local nodes and remote hosts alike.
Discovery there is incremental (reconciler.watch.known): full only after a doubt, else the instances
touched since the last pass, on every reachable node.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from reconciler.actual import ActualState
from reconciler.errors import RemoteHostError
from reconciler.lock import Holder
from reconciler.model import DesiredState, NodeSpec
from reconciler.node import HeldLock, Node
from reconciler.planner import Plan
from reconciler.watch.known import Known
from reconciler.watch.logfmt import EventLog
from reconciler.watch.reconcile import ActionOutcome

if TYPE_CHECKING:
    from reconciler.fleet import Fleet
    from reconciler.watch.hosts import HostLinks


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
    """Carries out plans with the real executor on the nodes `nodes()` gives (the pass's fleet)."""

    def __init__(self, log: EventLog, parallel: int = 4,
                 nodes: Callable[[DesiredState], Mapping[str, Node]] | None = None) -> None:
        self._log = log
        self._parallel = parallel
        self._nodes = nodes or _local

    async def __call__(self, plan: Plan, desired: DesiredState,
                       revision: str | None) -> Sequence[ActionOutcome]:
        from reconciler.executor.context import Context
        from reconciler.executor.schedule import run_plan

        ctx = Context(nodes=dict(self._nodes(desired)), specs=desired.instances,
                      progress=LogProgress(self._log), revision=revision)
        summary = await run_plan(plan, ctx, self._parallel)
        return [ActionOutcome(r.action, r.ok, r.detail, r.seconds, r.status.value) for r in summary.results]


def _local(desired: DesiredState) -> Mapping[str, Node]:
    from reconciler.node import local_nodes

    return local_nodes([desired.nodes[n] for n in sorted(desired.nodes)])


class FleetPass:
    """A pass's I/O on the daemon's fleet: the node locks, discovery, the host checks and the executor,
    all through the Nodes that the host links give the pass (local and remote alike).

    `locked` opens the pass: it takes the fleet of this moment from `HostLinks` and locks each reachable
    node on the node, in name order (as `Fleet.locked` and so `apply` do); a lock that another run held
    since our last pass is a doubt for `known`. The other steps of the pass use that fleet. A host that
    fails during the pass (its discovery or lock) is unreachable for the rest of it."""

    def __init__(self, hosts: HostLinks, lock_timeout: float,
                 on_wait: Callable[[str, Holder | None], None] | None = None,
                 known: Known | None = None) -> None:
        self._hosts = hosts
        self._timeout = lock_timeout
        self._on_wait = on_wait
        self._fleet: Fleet | None = None
        self.known = known or Known()

    @contextlib.asynccontextmanager
    async def locked(self, nodes: Sequence[NodeSpec]) -> AsyncIterator[None]:
        fleet = await self._hosts.fleet(nodes)
        self._fleet = fleet
        held: list[tuple[str, HeldLock]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            for name in sorted(fleet.nodes):
                try:
                    lock = await fleet.nodes[name].lock("watch", max(0.0, deadline - loop.time()),
                                                        self._on_wait)
                except RemoteHostError as err:
                    fleet.lost(name, err)
                    continue
                held.append((name, lock))
                if not lock.undisturbed:
                    self.known.doubt(f"another run held the lock of node {name}")
            yield
        finally:
            self._fleet = None
            for name, lock in reversed(held):
                try:
                    await lock.release()
                except RemoteHostError as err:
                    fleet.lost(name, err)

    def _current(self) -> Fleet:
        if self._fleet is None:
            raise RuntimeError("a pass step ran outside `locked`")
        return self._fleet

    async def discover(self, nodes: Sequence[NodeSpec]) -> ActualState:
        fleet = self._current()
        look = self.known.look({n: node.spec for n, node in fleet.nodes.items()})
        if look.full:
            actual = await fleet.discover()
        else:
            actual = await self._partial(fleet, look.names)
        self.known.learned({n: node.spec for n, node in fleet.nodes.items()}, actual)
        return actual

    async def _partial(self, fleet: Fleet, names: frozenset[str]) -> ActualState:
        """The known state with `names` looked at again on every reachable node (nothing else is)."""
        reachable = list(fleet.nodes.values()) if names else []
        found = await asyncio.gather(*(n.discover_instances(names) for n in reachable),
                                     return_exceptions=True)
        states: list[ActualState] = []
        for node, result in zip(reachable, found, strict=True):
            if isinstance(result, RemoteHostError):
                fleet.lost(node.name, result)
                self.known.doubt(f"node {node.name} failed")
            elif isinstance(result, BaseException):
                raise result
            else:
                states.append(result)
        merged = self.known.merged(names, states, {n: node.spec for n, node in fleet.nodes.items()})
        return replace(merged, unreachable=tuple(fleet.unreachable[n] for n in sorted(fleet.unreachable)))

    async def check_hosts(self, plan: Plan, desired: DesiredState, actual: ActualState) -> Plan:
        from reconciler import hostcheck

        return await hostcheck.check_async(plan, desired, actual, self._current().nodes)

    def nodes(self, desired: DesiredState) -> Mapping[str, Node]:
        return self._current().nodes
