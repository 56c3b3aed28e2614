"""ExitWatchers through a `WatchPort` (the remote node's seam), with fake ports: an exit answered by the
port is classified with its pidfile evidence and triggers a pass; a process already gone triggers one; a
link that fails ends the watcher quietly (the host links report the loss); no port (host down) means no
watch. The watcher's QMP events come through the same port."""

from __future__ import annotations

import asyncio

from reconciler import qmp
from reconciler.errors import QmpConnectError, RemoteCallError
from reconciler.procwatch import Ended, ExitSeen
from reconciler.watch.triggers import ExitKind, ExitWatchers, Observation, Trigger, Watched, WatchPort

W = Watched("vm", "r1", 4242, 1.0, "/remote/instances/vm/qmp-watch.sock", "/remote/instances/vm/qemu.pid")


class Port:
    def __init__(self, answer: ExitSeen | Exception) -> None:
        self.answer = answer
        self.exit = asyncio.Event()
        self.asked: list[tuple[int, float | None, str | None]] = []
        self.qmp_asked: list[str] = []

    async def watch_exit(self, pid: int, started_at: float | None, pidfile: str | None,
                         timeout: float) -> ExitSeen:
        self.asked.append((pid, started_at, pidfile))
        await self.exit.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    async def qmp_watch(self, instance: str, timeout: float) -> qmp.QmpSession:
        self.qmp_asked.append(instance)
        raise QmpConnectError(instance, "not in this test")


def watch(port: WatchPort | None) -> tuple[list[Trigger], list[Observation]]:
    triggers: list[Trigger] = []
    seen: list[Observation] = []

    async def main() -> None:
        watchers = ExitWatchers(triggers.append, seen.append, lambda w: port)
        watchers.sync([W])
        await asyncio.sleep(0.05)
        if isinstance(port, Port):
            port.exit.set()
        await asyncio.sleep(0.05)
        assert await watchers.close() == []

    asyncio.run(main())
    return triggers, seen


def test_an_exit_from_the_port_is_classified_with_the_pidfile_evidence() -> None:
    port = Port(ExitSeen(Ended.EXITED, pidfile_left=False))
    triggers, seen = watch(port)
    assert port.asked == [(4242, 1.0, "/remote/instances/vm/qemu.pid")] and port.qmp_asked == ["vm"]
    assert [o.kind for o in seen] == [ExitKind.HOST_STOP] and seen[0].exited
    assert [t.detail for t in triggers] == ["vm@r1: QEMU exited (stopped-by-host)"]
    _, seen = watch(Port(ExitSeen(Ended.EXITED, pidfile_left=True)))
    assert [o.kind for o in seen] == [ExitKind.CRASH]


def test_a_process_gone_before_its_watch_is_an_exit_and_a_lost_link_or_no_port_ends_quietly() -> None:
    """A QEMU that ended between the discovery that saw it and its watch is still logged as an exit
    (it once only triggered a pass: its crash was missing from the log and the metrics)."""
    triggers, seen = watch(Port(ExitSeen(Ended.GONE, pidfile_left=True)))
    assert [t.detail for t in triggers] == ["vm@r1: QEMU exited (crash)"]
    assert [(o.kind, o.exited, o.detail) for o in seen] == [
        (ExitKind.CRASH, True, "exited without a SHUTDOWN event; it had ended before its watch began")]
    _, seen = watch(Port(ExitSeen(Ended.GONE, pidfile_left=False)))
    assert [o.kind for o in seen] == [ExitKind.HOST_STOP]
    lost = RemoteCallError("r1", "root@198.18.0.11:22", "the connection was lost", method="process_watch")
    assert watch(Port(lost)) == ([], [])
    assert watch(None) == ([], [])


def test_a_watch_renewed_on_a_process_already_reported_ended_reports_it_once() -> None:
    """Discovery may list a QEMU for a moment after its exit was seen (a zombie PID 1 has not reaped):
    the watch made again for it finds it gone, which triggers a pass but is not a second exit."""
    triggers: list[Trigger] = []
    seen: list[Observation] = []

    async def main() -> None:
        port = Port(ExitSeen(Ended.EXITED, pidfile_left=True))
        watchers = ExitWatchers(triggers.append, seen.append, lambda w: port)
        port.exit.set()
        watchers.sync([W])
        await asyncio.sleep(0.05)
        port.answer = ExitSeen(Ended.GONE, pidfile_left=True)
        watchers.sync([W])  # still listed: watched again
        await asyncio.sleep(0.05)
        watchers.sync([])  # no longer listed: forgotten
        watchers.sync([W])  # the same key again (a PID reused by the same instance): reported anew
        await asyncio.sleep(0.05)
        assert await watchers.close() == []

    asyncio.run(main())
    assert [o.kind for o in seen] == [ExitKind.CRASH, ExitKind.CRASH]
    assert [t.detail for t in triggers] == ["vm@r1: QEMU exited (crash)"] * 3


def test_a_crash_discovered_before_any_watch_is_reported_once_but_not_at_the_first_sync() -> None:
    """A QEMU started by one pass and killed before the next could list it is only ever seen crashed (its
    record and pidfile left): that is an exit too (it once went uncounted, failing the crash-loop test in
    CI). Crashes found by the daemon's first pass happened before it ran, and one already watched and
    reported is not reported again."""
    seen: list[Observation] = []
    old = Watched("old", "r1", 11, 1.0, "/r/instances/old/qmp-watch.sock", "/r/instances/old/qemu.pid")

    async def main() -> None:
        port = Port(ExitSeen(Ended.EXITED, pidfile_left=True))
        watchers = ExitWatchers(lambda t: None, seen.append, lambda w: port)
        watchers.sync([], [old])  # first sync: from before the daemon
        watchers.sync([], [old, W])  # W never watched: its crash is news
        watchers.sync([], [old, W])  # ...once
        watched = Watched("vm2", "r1", 77, 1.0, "/r/instances/vm2/qmp-watch.sock",
                          "/r/instances/vm2/qemu.pid")
        watchers.sync([watched], [old, W])
        port.exit.set()
        await asyncio.sleep(0.05)  # its watcher reports the crash
        watchers.sync([], [old, W, watched])  # and discovery then finds it crashed: not a second report
        assert await watchers.close() == []

    asyncio.run(main())
    assert [(o.name, o.kind, o.exited) for o in seen] == [
        ("vm", ExitKind.CRASH, True), ("vm2", ExitKind.CRASH, True)]
