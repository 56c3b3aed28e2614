"""The watch daemon's nodes for its whole life: one SSH link per remote host, kept open between passes,
reopened with backoff when it is lost; and, for each pass, the `Fleet` of the nodes reachable right then.

Why not `fleet.open_fleet` per pass, as `apply` does: a link costs a handshake and an agent start-up
(tens of milliseconds at best), and the daemon must hear from its hosts between passes (a QEMU exit is
pushed over the link, reconciler.watch.triggers.WatchPort). So links live as long as their host is
declared, and the rules of `fleet` still hold for every pass: a host that cannot be reached is an
`UnreachableNode` with its reason, nothing is planned on it and nothing it may run is started elsewhere.

When a link is lost (the agent's channel ends: the host went down, its sshd was stopped, the network
failed) the daemon is told at once (`HostLink.wait_lost`), says so in its log, runs a pass (the status
file and metrics then show the node unreachable) and reconnects: at once first, then after the crash-loop
backoff's delays (0.5 s, 1 s, 2 s, ... capped). The pass after a reconnect reconciles the host. A host
key that does not match is never retried on a timer (a possible attack): only a change of the node's
manifest or a SIGHUP tries it again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from reconciler.errors import HostKeyRejected, HostUnreachable, RemoteHostError
from reconciler.fleet import Fleet, target_of, unreachable_of
from reconciler.model import NodeSpec
from reconciler.node import LocalNode, Node
from reconciler.watch.backoff import BackoffPolicy
from reconciler.watch.logfmt import EventLog
from reconciler.watch.triggers import Emit, LocalPort, Trigger, TriggerSource, Watched, WatchPort

if TYPE_CHECKING:
    from reconciler.remote.node import RemoteNode
    from reconciler.remote.ssh import HostLink, SshTarget

RECONNECT = BackoffPolicy(base=0.5, cap=30.0)
HostKey = tuple[object, ...]


def host_key(spec: NodeSpec) -> HostKey:
    """Nodes that share one host (the same SSH target) share one link, as in `fleet.open_fleet`."""
    s = spec.ssh
    assert s is not None
    return (s.host, s.port, s.user, s.identity_file, s.known_hosts_file, s.agent_command, s.connect_timeout)


@dataclass(eq=False)
class _Host:
    """One remote host's link, or why there is none."""

    target: SshTarget
    link: HostLink | None = None
    error: RemoteHostError | None = None  # why there is no link
    failures: int = 0  # attempts failed in a row
    tried: bool = False  # a first connection was attempted
    connecting: asyncio.Task[None] | None = None
    retry: asyncio.TimerHandle | None = None
    lost_watch: asyncio.Task[None] | None = None
    nodes: dict[str, RemoteNode] = field(default_factory=dict)  # over `link`, by node name


class HostLinks:
    """Every declared remote host's link, kept open; `fleet(specs)` gives a pass its nodes."""

    def __init__(self, emit: Emit, log: EventLog, policy: BackoffPolicy = RECONNECT,
                 open_link: Callable[[SshTarget], Awaitable[HostLink]] | None = None) -> None:
        self._emit = emit
        self._log = log
        self._policy = policy
        self._open = open_link
        self._hosts: dict[HostKey, _Host] = {}
        self._specs: dict[str, NodeSpec] = {}
        self._closing = False

    # --- a pass's nodes ---------------------------------------------------------------------------

    async def fleet(self, specs: Sequence[NodeSpec]) -> Fleet:
        """The nodes of `specs` for one pass: local ones, remote ones over their open links, and the
        unreachable ones with their reasons. A host new to the manifests is connected now (all at once,
        each within its connectTimeout); a lost one is left to its reconnect timer."""
        self._specs = {s.name: s for s in specs}
        wanted: dict[HostKey, list[NodeSpec]] = {}
        for s in specs:
            if s.ssh is not None:
                wanted.setdefault(host_key(s), []).append(s)
        for key in [k for k in self._hosts if k not in wanted]:
            await self._drop(self._hosts.pop(key))
        for key, group in wanted.items():
            if key not in self._hosts:
                self._hosts[key] = _Host(target_of(group[0]))
        first = [h for h in self._hosts.values() if not h.tried]
        if first:
            await asyncio.gather(*(self._connect(h, in_pass=True) for h in first))
        nodes: dict[str, Node] = {s.name: LocalNode(s) for s in specs if s.ssh is None}
        fleet = Fleet(nodes)
        for key, group in wanted.items():
            host = self._hosts[key]
            for s in group:
                node = self._node(host, s)
                if node is not None:
                    nodes[s.name] = node
                else:
                    fleet.unreachable[s.name] = unreachable_of(s.name, host.error or HostUnreachable(
                        s.name, host.target.where, "unreachable: connecting"))
        fleet.nodes = dict(sorted(nodes.items()))
        return fleet

    def _node(self, host: _Host, spec: NodeSpec) -> RemoteNode | None:
        if host.link is None or not host.link.alive:
            return None
        node = host.nodes.get(spec.name)
        if node is None or node.spec != spec:
            from reconciler.remote.node import RemoteNode

            node = host.nodes[spec.name] = RemoteNode(spec, host.link)
        return node

    def port_of(self, w: Watched) -> WatchPort | None:
        """Where the daemon's watcher of `w` hears of its exit and events (None: its host is down)."""
        spec = self._specs.get(w.node)
        if spec is None or spec.ssh is None:
            return LocalPort(w.qmp_watch)
        host = self._hosts.get(host_key(spec))
        return None if host is None else self._node(host, spec)

    def retry_rejected(self) -> None:
        """SIGHUP: hosts whose key was rejected are tried again at the next pass (never on a timer)."""
        for host in self._hosts.values():
            if isinstance(host.error, HostKeyRejected) and host.connecting is None:
                host.tried = False

    # --- links ------------------------------------------------------------------------------------

    async def _connect(self, host: _Host, in_pass: bool = False) -> None:
        """One attempt; success or failure is logged, and a failure schedules the next attempt. Outside
        a pass (a reconnect), a change is told to the daemon by a HOST trigger, so a pass follows."""
        host.tried = True
        if host.retry is not None:
            host.retry.cancel()
            host.retry = None
        try:
            link = await self._open_link(host.target)
        except RemoteHostError as err:
            self._failed(host, err, not in_pass)
            return
        except Exception as err:  # a bug must not end the daemon's reconnecting
            self._failed(host, HostUnreachable(host.target.node, host.target.where,
                                               f"unreachable: {type(err).__name__}: {err}"), not in_pass)
            return
        if self._closing:
            await link.close()
            return
        was_down = host.failures > 0 or host.error is not None
        host.link, host.error, host.failures, host.nodes = link, None, 0, {}
        host.lost_watch = asyncio.create_task(self._watch_lost(host, link), name=f"link {host.target.where}")
        if was_down:
            self._log.info("host-reconnected", host=host.target.where, nodes=self._names(host))
            self._emit(Trigger(TriggerSource.HOST, f"{host.target.where} is back"))
        else:
            self._log.info("host-connected", host=host.target.where, nodes=self._names(host),
                           agent=link.hello.version)

    async def _open_link(self, target: SshTarget) -> HostLink:
        if self._open is not None:
            return await self._open(target)
        from reconciler.remote.ssh import open_link

        return await open_link(target)

    def _failed(self, host: _Host, err: RemoteHostError, tell: bool) -> None:
        first = host.failures == 0
        host.failures += 1
        host.error = err
        if isinstance(err, HostKeyRejected):
            self._log.error("host-key-rejected", host=host.target.where, nodes=self._names(host),
                            error=err.detail, note="a possible attack; not retried until SIGHUP or a "
                            "change of the node's manifest")
        else:
            delay = self._policy.delay(host.failures)
            (self._log.warning if first else self._log.debug)(
                "host-unreachable", host=host.target.where, nodes=self._names(host), error=err.detail,
                attempts=host.failures, retry_in=round(delay, 2))
            host.retry = asyncio.get_running_loop().call_later(delay, self._start_reconnect, host)
        if first and tell:  # the pass that follows reports the node in the status file and the metrics
            self._emit(Trigger(TriggerSource.HOST, f"{host.target.where} is unreachable"))

    def _start_reconnect(self, host: _Host) -> None:
        host.retry = None
        if self._closing or host not in self._hosts.values() or host.connecting is not None:
            return
        host.connecting = asyncio.create_task(self._reconnect(host), name=f"reconnect {host.target.where}")

    async def _reconnect(self, host: _Host) -> None:
        try:
            await self._connect(host)
        finally:
            host.connecting = None

    async def _watch_lost(self, host: _Host, link: HostLink) -> None:
        reason = await link.wait_lost()
        if self._closing or host.link is not link:
            return
        host.link, host.nodes = None, {}
        host.error = HostUnreachable(host.target.node, host.target.where, f"unreachable: {reason}")
        host.failures = 0
        self._log.warning("host-lost", host=host.target.where, nodes=self._names(host), error=reason,
                          note="reconnecting")
        self._emit(Trigger(TriggerSource.HOST, f"{host.target.where}: {reason}"))
        with contextlib.suppress(Exception):
            await link.close()
        self._start_reconnect(host)

    def _names(self, host: _Host) -> str:
        key = next((k for k, h in self._hosts.items() if h is host), None)
        return ",".join(sorted(s.name for s in self._specs.values() if s.ssh is not None and
                               host_key(s) == key)) or host.target.node

    async def _drop(self, host: _Host) -> None:
        if host.retry is not None:
            host.retry.cancel()
        for task in (host.connecting, host.lost_watch):
            if task is not None:
                task.cancel()
        if host.link is not None:
            link, host.link = host.link, None
            with contextlib.suppress(Exception):
                await link.close()

    async def close(self) -> None:
        self._closing = True
        hosts, self._hosts = list(self._hosts.values()), {}
        await asyncio.gather(*(self._drop(h) for h in hosts), return_exceptions=True)
