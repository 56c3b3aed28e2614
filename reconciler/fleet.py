"""The nodes of one run, all opened at once: a LocalNode for a node on this machine, a RemoteNode over an
SSH link for a node with `ssh`, and for a host that cannot be reached an `UnreachableNode` with its reason.

Why its own module: every command that touches nodes (plan, apply, status, node-info, the verbs,
console, qmp, watch) needs exactly this, and the rule "a host we cannot reach is reported, never guessed
about" lives in one place. Links open in parallel, so a run costs the slowest handshake rather than the
sum; a host that fails later in the run (its discovery, its lock) joins the unreachable ones the same way.
Locks are taken on each node, in node-name order, so two runs never deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from reconciler.actual import ActualState, Reach, UnreachableNode
from reconciler.errors import HostKeyRejected, RemoteAgentError, RemoteHostError
from reconciler.model import NodeSpec
from reconciler.node import HeldLock, LocalNode, Node, OnLockWait, discover_all, merge_states

if TYPE_CHECKING:
    from reconciler.remote.link import HostLink, SshTarget


def target_of(spec: NodeSpec) -> SshTarget:
    """The SSH target of a remote node."""
    from reconciler.remote.link import SshTarget

    assert spec.ssh is not None
    s = spec.ssh
    return SshTarget(spec.name, s.host, s.port, s.user, s.identity_file, s.known_hosts_file,
                     s.connect_timeout, s.agent_command, s.persist)


def unreachable_of(node: str, err: RemoteHostError) -> UnreachableNode:
    """The typed error of a remote host, as the unreachable node the plan and status show."""
    reach = (Reach.HOST_KEY if isinstance(err, HostKeyRejected)
             else Reach.NO_AGENT if isinstance(err, RemoteAgentError) else Reach.UNREACHABLE)
    detail = err.detail.removeprefix("unreachable: ")
    return UnreachableNode(node, reach, f"{err.host}: {detail}")


@dataclass
class Fleet:
    """The reachable nodes of a run (`nodes`, by name) and the unreachable ones, with their reasons."""

    nodes: dict[str, Node]
    unreachable: dict[str, UnreachableNode] = field(default_factory=dict)
    _links: list[HostLink] = field(default_factory=list)

    @property
    def remote(self) -> bool:
        return any(not isinstance(n, LocalNode) for n in self.nodes.values()) or bool(self.unreachable)

    def lost(self, node: str, err: RemoteHostError) -> None:
        """`node` failed during the run: from now on it is unreachable (nothing more is asked of it)."""
        self.nodes.pop(node, None)
        self.unreachable.setdefault(node, unreachable_of(node, err))

    async def discover(self) -> ActualState:
        """Discover every reachable node at once; a remote host that fails becomes unreachable."""
        local = [n for n in self.nodes.values() if isinstance(n, LocalNode)]
        remote = [n for n in self.nodes.values() if not isinstance(n, LocalNode)]
        results = await asyncio.gather(discover_all(local), *(n.discover() for n in remote),
                                       return_exceptions=True)
        states: list[ActualState] = []
        for node, result in zip([None, *remote], results, strict=True):
            if isinstance(result, RemoteHostError) and node is not None:
                self.lost(node.name, result)
            elif isinstance(result, BaseException):
                raise result
            else:
                states.append(result)
        machines = {n.name: n.spec.machine for n in [*local, *remote]}
        merged = merge_states(states, machines)
        return replace(merged, unreachable=tuple(self.unreachable[n] for n in sorted(self.unreachable)))

    @contextlib.asynccontextmanager
    async def locked(self, operation: str, timeout: float | None,
                     on_wait: OnLockWait | None = None) -> AsyncIterator[None]:
        """Hold the lock of every reachable node, taken on each node in name order, all within
        `timeout` (None: wait forever; 0: fail at once). A host lost while locking becomes unreachable."""
        held: list[tuple[str, HeldLock]] = []
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            for name in sorted(self.nodes):
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    held.append((name, await self.nodes[name].lock(
                        operation, 0.0 if timeout == 0 else remaining, on_wait)))
                except RemoteHostError as err:
                    self.lost(name, err)
            yield
        finally:
            for name, lock in reversed(held):
                try:
                    await lock.release()
                except RemoteHostError as err:  # its host went away during the run: say so at the end
                    self.lost(name, err)

    async def close(self) -> None:
        links, self._links = self._links, []
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


async def open_fleet(specs: Iterable[NodeSpec]) -> Fleet:
    """Every node of `specs`: local ones at once, remote ones by opening their links in parallel.
    Nodes that share one host share one link."""
    ordered = sorted(specs, key=lambda s: s.name)
    nodes: dict[str, Node] = {s.name: LocalNode(s) for s in ordered if s.ssh is None}
    remote = [s for s in ordered if s.ssh is not None]
    fleet = Fleet(nodes)
    if not remote:
        return fleet
    from reconciler.remote.node import RemoteNode

    by_machine: dict[tuple[object, ...], list[NodeSpec]] = {}
    for s in remote:
        assert s.ssh is not None
        by_machine.setdefault((s.ssh.host, s.ssh.port, s.ssh.user, s.ssh.identity_file,
                               s.ssh.known_hosts_file, s.ssh.agent_command), []).append(s)
    groups = list(by_machine.values())
    links = await asyncio.gather(*(open_remote(target_of(g[0])) for g in groups), return_exceptions=True)
    for group, link in zip(groups, links, strict=True):
        for s in group:
            if isinstance(link, RemoteHostError):
                fleet.unreachable[s.name] = unreachable_of(s.name, link)
            elif isinstance(link, BaseException):
                await fleet.close()
                raise link
            else:
                nodes[s.name] = RemoteNode(s, link)
        if not isinstance(link, BaseException):
            fleet._links.append(link)
    fleet.nodes = dict(sorted(nodes.items()))
    return fleet


async def open_remote(target: SshTarget) -> HostLink:
    """A link to `target`'s agent: through its live link keeper when persistence is on and one answers
    (no asyncssh import, no handshake, an agent already started), else a connection of our own -- and
    then, once that connection worked, a keeper is started in the background for the next runs."""
    from reconciler import phases

    if target.persist > 0:
        from reconciler.remote import keeperclient

        with phases.span("link keeper handoff"):
            kept = await keeperclient.open_kept(target)
        if kept is not None:
            return kept
    with phases.span("import asyncssh"):
        from reconciler.remote.ssh import open_link
    link = await open_link(target)
    if target.persist > 0:
        keeperclient.spawn(target)
    return link


@contextlib.asynccontextmanager
async def opened(specs: Iterable[NodeSpec]) -> AsyncIterator[Fleet]:
    """`open_fleet`, closed at the end."""
    fleet = await open_fleet(specs)
    try:
        yield fleet
    finally:
        await fleet.close()


def unreachable_lines(fleet: Fleet) -> Sequence[str]:
    """One line per unreachable node, for stderr at the end of a run (which then exits 1)."""
    return [fleet.unreachable[n].error for n in sorted(fleet.unreachable)]
