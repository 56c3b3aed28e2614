"""The daemon's host links (reconciler.watch.hosts) with fake links: one link per host for the daemon's
life, a lost link reported and reopened at once then with backoff, a rejected host key never retried on a
timer (only after SIGHUP), a host dropped from the manifests closed. Timers are real but tiny."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from reconciler import model
from reconciler.actual import Reach
from reconciler.errors import HostKeyRejected, HostUnreachable, RemoteHostError
from reconciler.node import LocalNode
from reconciler.remote.ssh import HostLink, SshTarget
from reconciler.watch.backoff import BackoffPolicy
from reconciler.watch.hosts import HostLinks
from reconciler.watch.logfmt import EventLog, Level, LogFormat
from reconciler.watch.triggers import LocalPort, Trigger, TriggerSource, Watched

FAST = BackoffPolicy(base=0.02, cap=0.08)
DEADLINE = 5.0


class FakeLink:
    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self.hello = type("Hello", (), {"version": "test"})()
        self.alive = True
        self.closed = False
        self._lost = asyncio.Event()
        self.reason = ""

    def lose(self, reason: str) -> None:
        self.alive = False
        self.reason = reason
        self._lost.set()

    async def wait_lost(self) -> str:
        await self._lost.wait()
        return self.reason

    async def close(self) -> None:
        self.closed = True
        self.alive = False
        self._lost.set()


class Script:
    """What each connection attempt does: the next error in `errors`, else a new FakeLink."""

    def __init__(self) -> None:
        self.errors: list[RemoteHostError] = []
        self.attempts: list[float] = []
        self.links: list[FakeLink] = []

    async def open(self, target: SshTarget) -> HostLink:
        self.attempts.append(asyncio.get_running_loop().time())
        if self.errors:
            raise self.errors.pop(0)
        link = FakeLink(target)
        self.links.append(link)
        return cast(HostLink, link)


class Log(EventLog):
    """The daemon's JSON lines, kept in memory."""

    def __init__(self) -> None:
        super().__init__(LogFormat.JSON, Level.DEBUG, io.StringIO())

    def named(self, event: str) -> list[dict[str, Any]]:
        assert isinstance(self.stream, io.StringIO)
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines()]
        return [e for e in lines if e["event"] == event]


def remote(name: str, host: str = "198.18.0.11") -> model.NodeSpec:
    return model.NodeSpec(name=name, state_dir="/var/lib/x", address=host, ssh=model.SshSpec(host=host))


def run(body: Callable[[HostLinks, Script, Log, asyncio.Queue[Trigger]], Awaitable[None]]) -> None:
    async def main() -> None:
        queue: asyncio.Queue[Trigger] = asyncio.Queue()
        script, log = Script(), Log()
        links = HostLinks(queue.put_nowait, log, FAST, script.open)
        try:
            async with asyncio.timeout(DEADLINE):
                await body(links, script, log, queue)
        finally:
            await links.close()

    asyncio.run(main())


async def host_trigger(queue: asyncio.Queue[Trigger]) -> Trigger:
    while (t := await queue.get()).source is not TriggerSource.HOST:
        pass
    return t


def test_one_link_per_host_kept_between_passes_and_local_nodes_stay_local() -> None:
    async def body(links: HostLinks, script: Script, log: Log, queue: asyncio.Queue[Trigger]) -> None:
        specs = [remote("a"), remote("b"), remote("c", "198.18.0.12"),
                 model.NodeSpec(name="l", state_dir="/x")]
        first = await links.fleet(specs)
        second = await links.fleet(specs)
        assert len(script.links) == 2  # a and b share one host
        assert sorted(first.nodes) == ["a", "b", "c", "l"] and not first.unreachable
        assert isinstance(second.nodes["l"], LocalNode)
        assert first.nodes["a"] is second.nodes["a"]  # the same RemoteNode: its forwards are kept
        assert [f["nodes"] for f in log.named("host-connected")] == ["a,b", "c"]
        assert queue.empty()  # a first connection is part of the pass: no extra trigger

    run(body)


def test_a_lost_link_is_reported_and_reopened_at_once_then_with_backoff() -> None:
    async def body(links: HostLinks, script: Script, log: Log, queue: asyncio.Queue[Trigger]) -> None:
        specs = [remote("a")]
        await links.fleet(specs)
        refused = HostUnreachable("a", "root@198.18.0.11:22", "unreachable: connection refused")
        script.errors = [refused, refused, refused]
        script.links[0].lose("the connection was lost")
        assert "the connection was lost" in (await host_trigger(queue)).detail
        fleet = await links.fleet(specs)
        assert fleet.nodes == {} and fleet.unreachable["a"].reach is Reach.UNREACHABLE
        assert "the connection was lost" in fleet.unreachable["a"].detail
        assert (await host_trigger(queue)).detail.endswith("is unreachable")  # the first retry failed
        assert "back" in (await host_trigger(queue)).detail  # the fourth attempt connects
        gaps = [b - a for a, b in zip(script.attempts[1:], script.attempts[2:], strict=False)]
        assert len(script.attempts) == 5 and gaps[0] >= 0.02 and gaps[1] >= 0.04 and gaps[2] >= 0.08, gaps
        assert len(log.named("host-unreachable")) == 3 and len(log.named("host-lost")) == 1
        fleet = await links.fleet(specs)
        assert sorted(fleet.nodes) == ["a"] and not fleet.unreachable
        assert script.links[0].closed and not script.links[1].closed

    run(body)


def test_a_rejected_host_key_is_not_retried_on_a_timer_only_after_sighup() -> None:
    async def body(links: HostLinks, script: Script, log: Log, queue: asyncio.Queue[Trigger]) -> None:
        specs = [remote("a")]
        script.errors = [HostKeyRejected("a", "root@198.18.0.11:22", "host key not verified")]
        fleet = await links.fleet(specs)
        assert fleet.unreachable["a"].reach is Reach.HOST_KEY
        await asyncio.sleep(0.3)  # several backoff periods: no timer may fire
        assert len(script.attempts) == 1 and len(log.named("host-key-rejected")) == 1
        assert (await links.fleet(specs)).unreachable and len(script.attempts) == 1
        links.retry_rejected()
        fleet = await links.fleet(specs)
        assert len(script.attempts) == 2 and sorted(fleet.nodes) == ["a"]

    run(body)


def test_a_host_no_longer_declared_is_closed_and_watch_ports_follow_the_links() -> None:
    async def body(links: HostLinks, script: Script, log: Log, queue: asyncio.Queue[Trigger]) -> None:
        fleet = await links.fleet([remote("a"), model.NodeSpec(name="l", state_dir="/x")])
        w = Watched("vm", "a", 42, None, "/var/lib/x/instances/vm/qmp-watch.sock")
        assert links.port_of(w) is fleet.nodes["a"]
        assert isinstance(links.port_of(Watched("vm", "l", 42, None, "/x/q")), LocalPort)
        script.links[0].lose("gone")
        await host_trigger(queue)
        assert links.port_of(w) is None  # its host is down: nothing to watch it through
        await host_trigger(queue)  # back
        assert links.port_of(w) is not None
        await links.fleet([model.NodeSpec(name="l", state_dir="/x")])
        assert script.links[1].closed

    run(body)
