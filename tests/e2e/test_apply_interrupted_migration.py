"""End-to-end: the duplicate stop that resolves an interrupted migration never loses the guest.

An apply SIGKILLed mid-migration leaves QEMU migrating on its own. The next apply plans to stop the
incoming target as a duplicate; by the time that stop runs the migration may have completed, and then the
target holds the guest. Both orders are driven here deterministically, calling the executor's duplicate
stop as the next apply would, with a plan made before the migration's end. And an apply cancelled
(Ctrl-C) once QEMU completed the migration completes the move before it stops.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest, SerialLog
from executor.kit import BOOT_TIMEOUT, Lines, World, make_world, record_of

from reconciler import manifest, qmp
from reconciler.executor.context import Context
from reconciler.executor.duplicate import stop_duplicate
from reconciler.executor.migrate import migrate
from reconciler.executor.progress import RecordingProgress
from reconciler.model import NodeSpec
from reconciler.node import LocalNode, local_nodes
from reconciler.planner.actions import Action, ActionKind, Reason
from reconciler.records import AppliedRecord

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TICK = re.compile(r"reconciler-guest: tick (\d+)")
SLOW = {"maxBandwidth": "1M"}  # 128 MiB at 1 MiB/s: minutes, far longer than the test


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def _interrupted_migration(world: World, mode: str = "live") -> None:
    """web1 migrating node-a -> node-b inside QEMU, the apply that started it killed."""
    world.instance("web1", "node-a", migration={**SLOW, "mode": mode})
    assert world.apply().code == 0
    SerialLog(world.serial_log("node-a", "web1")).wait_for(TICK, BOOT_TIMEOUT)
    world.instance("web1", "node-b", migration={**SLOW, "mode": mode})
    out = Lines(world.spawn("apply", "--yes"))
    out.wait_for("%", 30)
    out.proc.kill()  # our own child
    out.finish()
    assert len(world.qemu_pids("web1")) == 2


def _tick(line: str) -> int:
    found = TICK.search(line)
    assert found is not None, line
    return int(found.group(1))


def _stop_target_as_planned(world: World) -> str:
    desired = manifest.load([str(world.manifests)]).desired
    assert desired is not None
    nodes = local_nodes([desired.nodes[n] for n in sorted(desired.nodes)])
    ctx = Context(nodes=nodes, specs=desired.instances, progress=RecordingProgress())
    return asyncio.run(stop_duplicate(ctx, nodes["node-b"], "web1"))


async def _status(socket: str) -> str:
    return await qmp.query_status(socket, 5)


async def _let_it_complete(source_qmp: str) -> None:
    async with qmp.session(source_qmp) as s:
        await s.execute("migrate-set-parameters", {"max-bandwidth": 1 << 30})
        while True:
            event = await s.wait_event(["MIGRATION"], 60)
            if event.data.get("status") in ("completed", "failed", "cancelled"):
                assert event.data["status"] == "completed"
                return


def test_target_still_incoming_is_stopped_after_cancelling_the_migration(world: World) -> None:
    _interrupted_migration(world)
    detail = _stop_target_as_planned(world)
    assert detail.startswith("stopped on node-b"), detail
    assert len(world.qemu_pids("web1")) == 1
    assert asyncio.run(_status(world.paths("node-a", "web1").qmp)) == "running"
    log = SerialLog(world.serial_log("node-a", "web1"))
    seen = _tick(log.wait_for(TICK, 10))
    while (later := _tick(log.wait_for(TICK, 10))) <= seen:
        pass  # lines logged before the cancel
    assert later > seen  # the guest goes on where it was
    world.instance("web1", "node-b")  # full speed (migration settings need no restart)
    assert world.apply().code == 0  # and the next apply migrates it as declared
    assert world.cli("plan").out.rstrip().endswith("No changes. The nodes match the manifests.")


def test_migration_completed_since_discovery_keeps_the_target(world: World) -> None:
    _interrupted_migration(world)
    asyncio.run(_let_it_complete(world.paths("node-a", "web1").qmp))  # the race, made certain
    detail = _stop_target_as_planned(world)
    assert detail.startswith("an interrupted migration had completed: kept the copy on node-b"), detail
    [pid] = world.qemu_pids("web1")
    assert asyncio.run(_status(world.paths("node-b", "web1").qmp)) == "running"
    log = SerialLog(world.serial_log("node-b", "web1"))
    assert _tick(log.wait_for(TICK, 10)) > 1  # the migrated guest, not a fresh boot
    converge = world.apply()
    assert converge.code == 0, converge.text
    assert world.qemu_pids("web1") == [pid]
    assert world.cli("plan").out.rstrip().endswith("No changes. The nodes match the manifests.")


def test_completed_offline_migration_found_by_the_next_apply_resumes_the_target(world: World) -> None:
    _interrupted_migration(world, "offline")
    asyncio.run(_let_it_complete(world.paths("node-a", "web1").qmp))  # before the next discovery
    assert asyncio.run(_status(world.paths("node-b", "web1").qmp)) == "paused"  # as its source was
    converge = world.apply()
    assert converge.code == 0, converge.text
    [pid] = world.qemu_pids("web1")
    assert asyncio.run(_status(world.paths("node-b", "web1").qmp)) == "running"
    assert _tick(SerialLog(world.serial_log("node-b", "web1")).wait_for(TICK, 10)) > 1
    assert world.cli("plan").out.rstrip().endswith("No changes. The nodes match the manifests.")
    assert world.qemu_pids("web1") == [pid]


class _SlowRecord(LocalNode):
    """A real local node whose record writes wait a while first: the window a Ctrl-C lands in after QEMU
    completed a migration, while the move is being completed."""

    def __init__(self, spec: NodeSpec, reached: asyncio.Event) -> None:
        super().__init__(spec)
        self.reached = reached

    async def write_record(self, record: AppliedRecord) -> None:
        self.reached.set()
        await asyncio.sleep(0.3)
        await super().write_record(record)


def test_cancelled_while_completing_a_migration_the_move_completes(world: World) -> None:
    """Ctrl-C after QEMU completed the migration: the target is recorded and the source's shell goes
    before the cancellation goes on (cut short, both QEMUs of the instance were left)."""
    world.instance("web1", "node-a")
    assert world.apply().code == 0
    SerialLog(world.serial_log("node-a", "web1")).wait_for(TICK, BOOT_TIMEOUT)
    world.instance("web1", "node-b")
    desired = manifest.load([str(world.manifests)]).desired
    assert desired is not None

    async def main() -> None:
        reached = asyncio.Event()
        nodes = local_nodes([desired.nodes["node-a"]])
        nodes["node-b"] = _SlowRecord(desired.nodes["node-b"], reached)
        ctx = Context(nodes=nodes, specs=desired.instances, progress=RecordingProgress())
        action = Action("web1", ActionKind.MIGRATE, Reason.NODE_CHANGED, "node-b", source_node="node-a")
        task = asyncio.ensure_future(migrate(ctx, action))
        await asyncio.wait_for(reached.wait(), 60)  # QEMU has completed it; the target is being recorded
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [pid] = world.qemu_pids("web1")
    assert asyncio.run(_status(world.paths("node-b", "web1").qmp)) == "running"
    rec = record_of(world, "node-b", "web1")
    assert rec is not None and rec.pid == pid
    assert _tick(SerialLog(world.serial_log("node-b", "web1")).wait_for(TICK, 10)) > 1  # the moved guest
    assert world.cli("plan").out.rstrip().endswith("No changes. The nodes match the manifests.")
