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


def test_a_gone_process_triggers_a_pass_and_a_lost_link_or_no_port_ends_quietly() -> None:
    triggers, seen = watch(Port(ExitSeen(Ended.GONE)))
    assert [t.detail for t in triggers] == ["vm@r1: pid 4242 is gone"] and seen == []
    lost = RemoteCallError("r1", "root@198.18.0.11:22", "the connection was lost", method="process_watch")
    assert watch(Port(lost)) == ([], [])
    assert watch(None) == ([], [])
