"""End-to-end: memory and vCPU changes made in the running guest (issue 15), on real QEMU (TCG) with the
test guest, which reports what it sees (MemTotal, online CPUs) on its serial console whenever it changes.

The guest's view is the verdict, with the PID: the same process before and after every live change.
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MEMORY_HOTPLUG_CMDLINE, TICK_PREFIX, Guest, GuestReport, SerialLog, wait_for_report
from executor.kit import BOOT_TIMEOUT, World, apply_killed_after, make_world, record_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPORT_TIMEOUT = 30.0
BOOT_MIB = 128


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def declare(world: World, name: str, node: str = "node-a", **spec: Any) -> None:
    """An instance with room for hotplug; the kernel line a 128 MiB guest with maxmem needs."""
    words = ["quiet", "panic=-1", f"reconciler.tag={name}", MEMORY_HOTPLUG_CMDLINE]
    kernel = {"path": world.kernel, "initrd": world.initrd, "root": "/dev/ram0", "cmdline": " ".join(words)}
    world.instance(name, node, kernel=kernel, **spec)


def booted(world: World, name: str) -> tuple[SerialLog, GuestReport]:
    log = SerialLog(world.serial_log("node-a", name))
    log.wait_for(f"reconciler-guest: ready {name}", BOOT_TIMEOUT)
    return log, wait_for_report(log, lambda r: True, REPORT_TIMEOUT)


def near(kib: int, want: int, slack: int = 4096) -> bool:
    return abs(kib - want) <= slack


def test_memory_down_with_the_balloon_back_up_then_up_with_a_dimm(world: World) -> None:
    declare(world, "web1", memory="128M", maxMemory="384M")
    assert world.apply().code == 0
    log, first = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    argv = record_of(world, "node-a", "web1").argv
    assert "128M,slots=8,maxmem=384M" in argv and "virtio-balloon-pci,id=balloon0" in argv

    declare(world, "web1", memory="96M", maxMemory="384M")
    plan = world.cli("plan")
    assert "~ web1 on node-a (update in place)" in plan.out, plan.text
    assert "memory_mib: 128 -> 96  # live" in plan.out and "forces restart" not in plan.out
    down = world.apply()
    assert down.code == 0 and "web1: updated in place on node-a (balloon 96 MiB" in down.out, down.text
    # The guest reports at each tick while its balloon moves: wait for the report at the target.
    low = wait_for_report(log, lambda r: near(r.mem_kib, first.mem_kib - 32 * 1024), REPORT_TIMEOUT)
    assert world.qemu_pids("web1") == [pid] and low.cpus == 1

    declare(world, "web1", memory="128M", maxMemory="384M")
    assert world.apply().code == 0
    back = wait_for_report(log, lambda r: near(r.mem_kib, first.mem_kib), REPORT_TIMEOUT)

    declare(world, "web1", memory="256M", maxMemory="384M")
    up = world.apply()
    assert up.code == 0 and "DIMM dimm0 of 128 MiB" in up.out, up.text
    high = wait_for_report(log, lambda r: near(r.mem_kib, first.mem_kib + 128 * 1024), REPORT_TIMEOUT)
    assert high.mem_kib > back.mem_kib
    assert world.qemu_pids("web1") == [pid]
    rec = record_of(world, "node-a", "web1")
    assert rec.spec.memory_mib == 256 and rec.launched_spec.memory_mib == BOOT_MIB and rec.argv == argv
    assert [(d.id, d.size_mib) for d in rec.plugged.dimms] == [("dimm0", 128)]
    assert "No changes" in world.apply().out

    # More than maxMemory: refused by plan (and apply) before anything is touched.
    declare(world, "web1", memory="512M", maxMemory="384M")
    refused = world.cli("plan")
    assert refused.code == 1, refused.text
    assert "spec.memory: 512 MiB is above maxMemory (384 MiB)" in refused.text, refused.text
    assert world.apply().code == 1
    assert world.qemu_pids("web1") == [pid] and record_of(world, "node-a", "web1").spec.memory_mib == 256


def test_vcpus_one_to_two_and_back_in_the_same_process(world: World) -> None:
    declare(world, "web1", vcpus=1, maxVcpus=2)
    assert world.apply().code == 0
    log, first = booted(world, "web1")
    assert first.cpus == 1
    (pid,) = world.qemu_pids("web1")
    declare(world, "web1", vcpus=2, maxVcpus=2)
    done = world.apply()
    assert done.code == 0 and "vCPUs 1 -> 2" in done.out, done.text
    report = wait_for_report(log, lambda r: r.cpus == 2, REPORT_TIMEOUT)
    assert report.cpus == 2 and world.qemu_pids("web1") == [pid]
    assert [c.id for c in record_of(world, "node-a", "web1").plugged.cpus] == ["vcpu0-1-0"]
    assert "No changes" in world.apply().out

    # And back: the hotplugged CPU is unplugged (device_del; the guest ejects it), same process.
    declare(world, "web1", vcpus=1, maxVcpus=2)
    plan = world.cli("plan")
    assert "vcpus: 2 -> 1  # live" in plan.out and "forces restart" not in plan.out, plan.text
    down = world.apply()
    assert down.code == 0 and "vCPUs 2 -> 1" in down.out, down.text
    report = wait_for_report(log, lambda r: r.cpus == 1, REPORT_TIMEOUT)
    assert world.qemu_pids("web1") == [pid] and record_of(world, "node-a", "web1").plugged.cpus == ()
    assert "No changes" in world.apply().out


def test_sigkill_of_apply_mid_hotplug_then_apply_converges(world: World) -> None:
    """Killed right after its `balloon` command, with a DIMM just plugged and the CPU not yet (the apply is
    held at that command, then SIGKILLed): the next apply reads QEMU's devices back, plugs no second
    DIMM, and finishes (same QEMU)."""
    declare(world, "web1", memory="128M", maxMemory="384M", vcpus=1, maxVcpus=2)
    assert world.apply().code == 0
    log, first = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    declare(world, "web1", memory="96M", maxMemory="384M", vcpus=1, maxVcpus=2)
    assert world.apply().code == 0
    low = wait_for_report(log, lambda r: near(r.mem_kib, first.mem_kib - 32 * 1024), REPORT_TIMEOUT)

    declare(world, "web1", memory="384M", maxMemory="384M", vcpus=2, maxVcpus=2)
    proc = apply_killed_after(world, "balloon")
    assert proc.returncode == -signal.SIGKILL
    assert world.qemu_pids("web1") == [pid]
    rec = record_of(world, "node-a", "web1")
    assert (rec.spec.memory_mib, rec.spec.vcpus) == (96, 1), "the kill came after the live update ended"
    assert Path(world.paths("node-a", "web1").intent).exists()
    plan = world.cli("plan")  # the record says what was applied before: the change is shown again
    assert plan.code == 0 and "(update in place)" in plan.out and "memory_mib: 96 -> 384  # live" in plan.out
    assert "# QEMU: DIMM dimm0 (256 MiB) plugged, not in the record" in plan.out, plan.text  # QEMU's view

    again = world.apply()
    assert again.code == 0 and not re.search(r"DIMM dimm\d of", again.out), again.text  # none plugged again
    report = wait_for_report(log, lambda r: r.cpus == 2 and near(r.mem_kib, first.mem_kib + 256 * 1024),
                             REPORT_TIMEOUT)
    assert report.mem_kib > low.mem_kib
    assert world.qemu_pids("web1") == [pid]  # one QEMU, the same one
    rec = record_of(world, "node-a", "web1")
    assert (rec.spec.memory_mib, rec.spec.vcpus) == (384, 2)
    assert [(d.id, d.size_mib) for d in rec.plugged.dimms] == [("dimm0", 256)] and len(rec.plugged.cpus) == 1
    assert not Path(world.paths("node-a", "web1").intent).exists()
    assert "No changes" in world.apply().out


def test_a_live_migration_after_hotplugs_recreates_them_on_the_target(world: World) -> None:
    declare(world, "web1", memory="128M", maxMemory="384M", vcpus=1, maxVcpus=2)
    assert world.apply().code == 0
    log, first = booted(world, "web1")
    declare(world, "web1", memory="256M", maxMemory="384M", vcpus=2, maxVcpus=2)
    assert world.apply().code == 0
    grown = wait_for_report(log, lambda r: r.cpus == 2 and near(r.mem_kib, first.mem_kib + 128 * 1024),
                            REPORT_TIMEOUT)
    (old_pid,) = world.qemu_pids("web1")

    declare(world, "web1", "node-b", memory="256M", maxMemory="384M", vcpus=2, maxVcpus=2)
    moved = world.apply()
    assert moved.code == 0 and "web1: migrated node-a -> node-b" in moved.out, moved.text
    (pid,) = world.qemu_pids("web1")
    assert pid != old_pid
    rec = record_of(world, "node-b", "web1")
    assert "dimm0" in " ".join(rec.argv) and "vcpu0-1-0" in " ".join(rec.argv), rec.argv
    assert (rec.spec.memory_mib, rec.spec.vcpus, rec.launched_spec.memory_mib) == (256, 2, BOOT_MIB)
    target_log = SerialLog(world.serial_log("node-b", "web1"))
    target_log.wait_for(TICK_PREFIX, REPORT_TIMEOUT)  # the guest keeps running: no second boot
    assert "ready" not in world.serial_log("node-b", "web1").read_text()
    assert "No changes" in world.apply().out

    # Still live-changeable on the target, with the same devices: down with the balloon.
    declare(world, "web1", "node-b", memory="192M", maxMemory="384M", vcpus=2, maxVcpus=2)
    down = world.apply()
    assert down.code == 0 and "balloon 192 MiB" in down.out and "DIMM" not in down.out, down.text
    low = wait_for_report(target_log, lambda r: near(r.mem_kib, grown.mem_kib - 64 * 1024), REPORT_TIMEOUT)
    assert low.cpus == 2
    assert world.qemu_pids("web1") == [pid]


def _appears(path: Path, timeout: float) -> bool:
    """Whether `path` comes into existence within `timeout`, woken by inotify (watchdog)."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    seen = threading.Event()
    target = str(path)

    class _Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if target in (str(event.src_path), str(getattr(event, "dest_path", ""))):
                seen.set()

    observer = Observer()
    observer.schedule(_Handler(), str(path.parent))
    observer.start()
    try:
        return os.path.exists(path) or seen.wait(timeout)
    finally:
        observer.stop()
        observer.join()
