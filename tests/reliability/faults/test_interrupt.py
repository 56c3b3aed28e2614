"""Interrupting the reconciler mid-migration: Ctrl-C in `apply`, and SIGTERM to `watch` whose shutdown
grace runs out. Either cancels the action; the migration must then be aborted as `virsh migrate` does on
Ctrl-C: the source keeps the guest (resumed if an offline migration paused it), the target copy and its
files are gone, no intent is left; the next reconcile does the migration again."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from reconciler import qmp
from reconciler.errors import ExitCode

from ..invariants import qemu_by_instance
from .kit import CLI_DEADLINE, Rig
from .wrapper import Wrapper

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SLOW = {"maxBandwidth": "2M"}  # 128 MiB at 2 MiB/s: still migrating when the interrupt lands


def _booted(rig: Rig, mode: str) -> int:
    rig.declare("web1", "node-a", migration={"mode": mode, **SLOW})
    rig.apply_ok()
    rig.wait_ready("node-a", "web1")
    (p,) = qemu_by_instance(rig.state_dirs)["web1"]
    return p.pid


def _left_on_the_source(rig: Rig, pid: int) -> None:
    """Only the source runs, and runs the guest (not paused); nothing of the target or the action left."""
    rig.check_fault()
    live = qemu_by_instance(rig.state_dirs)["web1"]
    assert [(p.pid, p.state_dir) for p in live] == [(pid, rig.node("node-a").state_dir)], live
    sock = rig.world.paths("node-a", "web1").qmp
    assert asyncio.run(qmp.query_status(sock, 5.0)) == "running"
    rig.assert_no_leaks()


@pytest.mark.parametrize("mode", ["live", "offline"])
def test_ctrl_c_in_apply_cancels_the_migration(rig: Rig, mode: str) -> None:
    pid = _booted(rig, mode)
    rig.declare("web1", "node-b", migration={"mode": mode, **SLOW})
    lines = rig.spawn("apply", "--yes")
    lines.wait_for("web1: migrating", CLI_DEADLINE)
    lines.wait_for("%", CLI_DEADLINE)  # the migration runs inside QEMU
    lines.proc.send_signal(signal.SIGINT)
    code, out = lines.finish(CLI_DEADLINE)
    assert code == ExitCode.INTERRUPTED, out
    assert "interrupted: cancelling the migration" in out and "Traceback" not in out, out
    _left_on_the_source(rig, pid)
    rig.declare("web1", "node-b")
    rig.converge({"web1": "node-b", "keep": "node-a"})


def test_watch_sigterm_after_the_grace_cancels_the_migration(rig: Rig) -> None:
    pid = _booted(rig, "live")
    lines = rig.spawn_watch(grace=0.5)
    rig.declare("web1", "node-b", migration=SLOW)  # the file event starts the migration
    lines.wait_for("migrating node-a -> node-b", CLI_DEADLINE)  # logged before the target launches
    lines.wait_for(" percent=", CLI_DEADLINE)  # the migration stream runs inside QEMU (action-progress)
    lines.proc.send_signal(signal.SIGTERM)
    lines.wait_for("abandoning-pass", CLI_DEADLINE)  # the 0.5 s grace ran out mid-migration
    code, out = lines.finish(CLI_DEADLINE)
    assert code == 0, out
    assert "interrupted: cancelling the migration" in out and "Traceback" not in out, out
    _left_on_the_source(rig, pid)
    rig.declare("web1", "node-b")
    rig.converge({"web1": "node-b", "keep": "node-a"})


def _interrupt_during_launch(rig: Rig, needle: str) -> str:
    lines = rig.spawn("apply", "--yes")
    lines.wait_for(needle, CLI_DEADLINE)
    time.sleep(0.3)  # the test's fault point: inside the 1.5 s launch on node-b
    lines.proc.send_signal(signal.SIGINT)
    code, out = lines.finish(CLI_DEADLINE)
    assert code == ExitCode.INTERRUPTED and "Traceback" not in out, out
    return out


def test_ctrl_c_while_the_migration_target_launches(rig: Rig, wrapper: Wrapper) -> None:
    """The launch is let finish (a QEMU killed mid-daemonize could leave its daemon behind), then the
    target is stopped: no migration ever began."""
    pid = _booted(rig, "live")
    wrapper.set("slow:1.5")
    rig.declare("web1", "node-b", migration={"mode": "live", **SLOW})
    out = _interrupt_during_launch(rig, "web1: migrating node-a")
    assert "interrupted: the migration target is stopped" in out, out
    _left_on_the_source(rig, pid)
    rig.declare("web1", "node-b")
    rig.converge({"web1": "node-b", "keep": "node-a"})


def test_ctrl_c_while_a_start_launches_finishes_that_start(rig: Rig, wrapper: Wrapper) -> None:
    wrapper.set("slow:1.5")
    rig.declare("web1", "node-b")
    _interrupt_during_launch(rig, "web1: starting on node-b")
    rig.check_fault()
    assert [p.state_dir for p in qemu_by_instance(rig.state_dirs)["web1"]] == [rig.node("node-b").state_dir]
    rig.assert_no_leaks()  # recorded, no intent left
    text = rig.converge({"web1": "node-b", "keep": "node-a"})
    assert "No changes" in text, text
