"""End-to-end: the imperative verbs (`start`, `stop`, `restart`, `reboot`) and `qmp` against real QEMU (TCG)
and the test guest: a Manual instance started, restarted (a new PID), rebooted (the same PID, the guest
boots again), queried over QMP and stopped; and stopping an Always instance, which says that the next
reconcile starts it again, and the next plan indeed does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest, SerialLog
from executor.kit import BOOT_TIMEOUT, World, make_world, record_of

from reconciler.actual import StopCause

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

NEXT = "the next reconcile (apply, or the watch daemon) starts it again"


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def ready(world: World, name: str, log: SerialLog | None = None) -> SerialLog:
    log = log or SerialLog(world.serial_log("node-a", name))
    log.wait_for(f"reconciler-guest: ready {name}", BOOT_TIMEOUT)
    return log


def test_manual_instance_start_restart_reboot_qmp_stop(world: World) -> None:
    world.instance("man", "node-a", runStrategy="Manual")
    assert "No changes" in world.apply().out  # Manual: the reconciler never starts it on its own
    assert world.qemu_pids("man") == []

    started = world.cli("start", "--yes", "man")
    assert started.code == 0, started.text
    assert "+ man on node-a" in started.out and "man: started on node-a (pid" in started.out
    assert "Start complete: 1 of 1 done." in started.out
    assert "next reconcile" not in started.text  # Manual: nothing to warn about
    ready(world, "man")
    (pid,) = world.qemu_pids("man")
    again = world.cli("start", "--yes", "man")
    assert again.code == 0 and f"man: already running on node-a (pid {pid}); nothing to do" in again.out

    restarted = world.cli("restart", "--yes", "man")
    assert restarted.code == 0, restarted.text
    assert "-/+ man on node-a" in restarted.out
    (new_pid,) = world.qemu_pids("man")
    assert new_pid != pid
    log = ready(world, "man")  # the new QEMU wrote a new serial log
    assert record_of(world, "node-a", "man").pid == new_pid

    rebooted = world.cli("reboot", "--yes", "man")
    assert rebooted.code == 0, rebooted.text
    assert "@ man on node-a (guest reset: system_reset + cont, same QEMU process)" in rebooted.out
    assert f"man: rebooted on node-a (same pid {new_pid})" in rebooted.out
    ready(world, "man", log)  # the guest boots a second time in the same process
    assert world.qemu_pids("man") == [new_pid]
    assert not Path(world.paths("node-a", "man").intent).exists()

    status = world.cli("qmp", "man", "query-status")
    assert status.code == 0, status.text
    assert json.loads(status.out)["status"] == "running"
    hmp = world.cli("qmp", "man", "human-monitor-command", '{"command-line": "info name"}')
    assert hmp.code == 0 and json.loads(hmp.out) == "man\r\n", hmp.text
    bad = world.cli("qmp", "man", "device_del", '{"id": "nosuchdevice"}')
    assert bad.code == 1 and bad.out == ""
    (line,) = bad.err.splitlines()
    assert line.startswith("error: QMP ") and "device_del: DeviceNotFound: " in line, bad.err

    stopped = world.cli("stop", "--yes", "man")
    assert stopped.code == 0, stopped.text
    assert "man: stopped on node-a (ACPI power-off)" in stopped.out
    assert "next reconcile" not in stopped.text
    assert world.qemu_pids("man") == []
    assert record_of(world, "node-a", "man").stop_cause is StopCause.RECONCILER
    assert "No changes" in world.cli("plan").out  # Manual: stays stopped
    gone = world.cli("qmp", "man", "query-status")
    assert gone.code == 1 and gone.err == "error: instance man is not running (stopped on node-a)\n"


def test_stopping_an_always_instance_says_the_next_reconcile_starts_it(world: World) -> None:
    world.instance("web", "node-a")
    assert world.apply().code == 0
    ready(world, "web")
    stopped = world.cli("stop", "--yes", "--force", "web")
    assert stopped.code == 0, stopped.text
    assert f"! instance web: run strategy Always: {NEXT}" in stopped.out  # shown with the plan
    assert stopped.out.index(NEXT) < stopped.out.index("web: stopping on node-a (forced)")
    assert "web: stopped on node-a (quit)" in stopped.out  # --force: no ACPI
    assert world.qemu_pids("web") == []
    plan = world.cli("plan")
    assert "+ web on node-a" in plan.out and "wanted running, not running" in plan.out, plan.out
