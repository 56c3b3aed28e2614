"""End-to-end: a QEMU launched but never confirmed over QMP is not left running.

The start launches QEMU, whose first QMP answer (during the launch) says whether it runs. A QEMU that
came up paused (here `-S`: prelaunch) is then continued through a session. When that session cannot be
opened (the monitor unreachable: seen when a remote forward reached another instance's QEMU), the start
fails; it once left the QEMU running with no record, and every later apply was refused ("already
running"), so the tree never converged. Here the node's QMP fails once, through the real node
interface; the QEMU is real, and so is the check that nothing of it is left. A QEMU that runs from its
first answer needs no session at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest
from executor.kit import World, make_world

from reconciler import manifest, qmp
from reconciler.errors import QmpConnectError
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.progress import RecordingProgress
from reconciler.executor.start import start
from reconciler.node import LocalNode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


class MonitorLostOnce(LocalNode):
    """A local node whose first QMP session fails as an unreachable monitor would."""

    failed = False
    asked = 0

    async def qmp(self, instance: str, timeout: float, *, patient: bool = False,
                  plain: bool = False) -> qmp.QmpSession:
        self.asked += 1
        if not self.failed:
            self.failed = True
            raise QmpConnectError(self.paths(instance).qmp, "the monitor could not be reached")
        return await super().qmp(instance, timeout, patient=patient, plain=plain)


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def test_a_start_whose_monitor_cannot_be_asked_leaves_no_qemu_and_the_next_start_succeeds(
        world: World) -> None:
    world.instance("web1", "node-a", qemuExtraArgs=["-S"])  # comes up paused: continued over a session
    desired = manifest.load([str(world.manifests)]).desired
    assert desired is not None
    node = MonitorLostOnce(desired.nodes["node-a"])
    ctx = Context(nodes={"node-a": node}, specs=desired.instances, progress=RecordingProgress())
    spec = desired.instances["web1"]

    with pytest.raises(ActionFailed, match="the monitor could not be reached"):
        asyncio.run(start(ctx, node, spec))
    assert world.qemu_pids("web1") == []  # killed, not left running unrecorded
    assert asyncio.run(node.read_record("web1")) is None
    assert asyncio.run(node.read_intent("web1")) is None

    line = asyncio.run(start(ctx, node, spec))  # the monitor answers now: the start converges
    assert line.startswith("started on node-a (pid ")
    assert len(world.qemu_pids("web1")) == 1


def test_a_start_that_runs_from_its_first_answer_opens_no_session(world: World) -> None:
    world.instance("web1", "node-a")
    desired = manifest.load([str(world.manifests)]).desired
    assert desired is not None
    node = MonitorLostOnce(desired.nodes["node-a"])
    ctx = Context(nodes={"node-a": node}, specs=desired.instances, progress=RecordingProgress())
    line = asyncio.run(start(ctx, node, desired.instances["web1"]))
    assert line.startswith("started on node-a (pid ") and node.asked == 0
    assert len(world.qemu_pids("web1")) == 1
