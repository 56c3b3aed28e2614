"""End-to-end: migrations between two nodes on this machine (TCG, loopback): live and offline moves keep
the guest running (its tick counter continues on the target's serial log), and failed migrations (target
killed mid-way; completion timeout with a tiny bandwidth) leave the instance running on the source with
nothing left on the target."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Guest, SerialLog
from executor.kit import BOOT_TIMEOUT, Lines, World, kill_verified, make_world, record_of

from reconciler.actual import RunState

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

TICK = re.compile(r"reconciler-guest: tick (\d+)")


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def _booted(world: World, name: str, node: str = "node-a", **spec: Any) -> int:
    """Start `name` on `node`, wait for its first tick; its pid."""
    world.instance(name, node, **spec)
    assert world.apply("--target", name).code == 0
    SerialLog(world.serial_log(node, name)).wait_for(TICK, BOOT_TIMEOUT)
    (pid,) = world.qemu_pids(name)
    return pid


def _last_tick(world: World, node: str, name: str) -> int:
    text = world.serial_log(node, name).read_text(errors="replace")
    return max(int(m.group(1)) for m in TICK.finditer(text))


def _assert_moved(world: World, name: str, old_pid: int, before: int) -> None:
    """Running on node-b only, with the guest's tick counter continuing (not a reboot)."""
    line = SerialLog(world.serial_log("node-b", name)).wait_for(TICK, 15)
    tick = TICK.search(line)
    assert tick is not None and int(tick.group(1)) >= before, (line, before)
    assert "ready" not in world.serial_log("node-b", name).read_text()  # no second boot
    pids = world.qemu_pids(name)
    assert len(pids) == 1 and pids[0] != old_pid
    assert record_of(world, "node-b", name).pid == pids[0]
    assert not Path(world.paths("node-a", name).dir).exists()
    (inst,) = world.actual().find(name)
    assert (inst.node, inst.state) == ("node-b", RunState.RUNNING)


def test_live_and_offline_migration_keep_the_guest_running(world: World) -> None:
    live_pid = _booted(world, "live")
    off_pid = _booted(world, "off", migration={"mode": "offline"})
    before = {n: _last_tick(world, "node-a", n) for n in ("live", "off")}
    world.instance("live", "node-b")
    world.instance("off", "node-b", migration={"mode": "offline"})
    done = world.apply()
    assert done.code == 0, done.text
    assert "Apply complete: 0 started, 0 stopped, 0 restarted, 2 migrated." in done.out
    assert "live: migrated node-a -> node-b" in done.out and "off: migrated node-a -> node-b" in done.out
    assert "(offline)" in done.out and "(live)" in done.out
    assert re.search(r"migrating \d+%", done.out)  # progress shown while it ran
    _assert_moved(world, "live", live_pid, before["live"])
    _assert_moved(world, "off", off_pid, before["off"])
    assert "No changes" in world.apply().out


def test_migration_with_target_killed_stays_on_source(world: World) -> None:
    pid = _booted(world, "web1", migration={"maxBandwidth": "4M"})
    world.instance("web1", "node-b", migration={"maxBandwidth": "4M"})
    out = Lines(world.spawn("apply", "--yes"))
    out.wait_for("web1: migrating", 30)
    out.wait_for("%", 30)  # the migration is under way
    (target,) = [p for p in world.qemu_pids("web1") if p != pid]
    kill_verified(target, str(world.root / "node-b"))
    code, text = out.finish()
    assert code == 1, text
    assert "migration failed" in text and "stays on node-a" in text
    assert world.qemu_pids("web1") == [pid]
    (inst,) = world.actual().find("web1")
    assert (inst.node, inst.state, inst.pid) == ("node-a", RunState.RUNNING, pid)
    assert not Path(world.paths("node-b", "web1").dir).exists()


def test_migration_past_its_timeout_is_cancelled(world: World) -> None:
    slow = {"maxBandwidth": "1M", "completionTimeoutPerGiB": "1s"}
    pid = _booted(world, "web1", migration=slow)
    world.instance("web1", "node-b", migration=slow)
    done = world.apply()
    assert done.code == 1, done.text
    assert "not completed within 1s: cancelling the migration" in done.out
    assert "migration cancelled" in done.err
    assert world.qemu_pids("web1") == [pid]
    (inst,) = world.actual().find("web1")
    assert (inst.node, inst.state) == ("node-a", RunState.RUNNING)
    assert not Path(world.paths("node-b", "web1").dir).exists()
    before = _last_tick(world, "node-a", "web1")
    SerialLog(world.serial_log("node-a", "web1")).wait_for(f"tick {before + 1}", 10)  # still ticking
