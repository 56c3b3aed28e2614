"""End-to-end: disks and NICs added and removed in the running guest (issue 15), on real QEMU (TCG) with the
test guest, which reports its block devices (with sizes) and NICs on its serial console whenever they
change, and writes to a disk when told so on its console.

The verdicts: the guest's own view, the image file's bytes, QEMU's account (query-pci, query-block,
query-named-block-nodes, `info network`), and the PID (the same process throughout).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TICK_PREFIX, Guest, GuestReport, SerialConsole, SerialLog, wait_for_report
from executor.kit import BOOT_TIMEOUT, World, apply_killed_after, make_world, record_of

from reconciler import devplug, qmp
from reconciler.argv import tap_ifname

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPORT_TIMEOUT = 30.0
MIB = 1024 * 1024
MAC0 = "52:54:00:aa:00:01"
MAC1 = "52:54:00:aa:00:02"


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def declare(world: World, name: str, node: str = "node-a", *, disks: list[dict[str, Any]] | None = None,
            nics: list[str] | None = None, **spec: Any) -> None:
    world.instance(name, node, disks=disks or [], nics=[{"mode": "user", "mac": m} for m in nics or [MAC0]],
                   **spec)


def booted(world: World, name: str, node: str = "node-a") -> tuple[SerialLog, GuestReport]:
    log = SerialLog(world.serial_log(node, name))
    log.wait_for(f"reconciler-guest: ready {name}", BOOT_TIMEOUT)
    return log, wait_for_report(log, lambda r: True, REPORT_TIMEOUT)


def console(world: World, node: str, name: str) -> SerialConsole:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(world.paths(node, name).serial)
    return SerialConsole(sock)


def qemu_view(world: World, node: str, name: str) -> dict[str, Any]:
    """QEMU's account of the devices, over the control socket (our own session, after apply ended)."""
    async def read() -> dict[str, Any]:
        s = await qmp.connect(world.paths(node, name).qmp, 5.0)
        try:
            pci = await s.execute("query-pci")
            nodes = await s.execute("query-named-block-nodes", {"flat": True})
            net = await s.execute("human-monitor-command", {"command-line": "info network"})
            return {"slots": devplug.pci_slots(pci), "nodes": sorted(n["node-name"] for n in nodes),
                    "netdevs": sorted(devplug.our_netdevs(net))}
        finally:
            await s.close()
    return asyncio.run(read())


def image(tmp_path: Path, name: str, size: int = 8 * MIB) -> str:
    path = tmp_path / name
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def test_a_disk_added_written_by_the_guest_then_removed(world: World, tmp_path: Path) -> None:
    data = image(tmp_path, "data.img", 8 * MIB)
    declare(world, "web1")
    assert world.apply().code == 0
    log, first = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    assert first.blk == {}

    declare(world, "web1", disks=[{"path": data}])
    plan = world.cli("plan")
    assert plan.code == 0 and "~ web1 on node-a (update in place)" in plan.out, plan.text
    assert "# live" in plan.out and "forces restart" not in plan.out, plan.text
    added = world.apply()
    disk_id = devplug.disk_id(data)
    assert added.code == 0 and f"disk {data} at slot" in added.out, added.text
    seen = wait_for_report(log, lambda r: r.blk.get("vda") == 8 * MIB, REPORT_TIMEOUT)
    assert seen.nics == first.nics and world.qemu_pids("web1") == [pid]
    rec = record_of(world, "node-a", "web1")
    assert [(p.id, p.disk.path) for p in rec.plugged.disks] == [(disk_id, data)]
    assert rec.plugged.disks[0].slot == qemu_view(world, "node-a", "web1")["slots"][disk_id]
    assert rec.launched_spec.disks == () and rec.spec.disks[0].path == data
    assert "No changes" in world.apply().out

    with console(world, "node-a", "web1") as con:
        con.send("write vda HOTPLUGGED\n")
        con.wait_for("reconciler-guest: wrote vda HOTPLUGGED", REPORT_TIMEOUT)

    declare(world, "web1", disks=[])
    removed = world.apply()
    assert removed.code == 0 and f"removed {data}" in removed.out, removed.text
    gone = wait_for_report(log, lambda r: "vda" not in r.blk, REPORT_TIMEOUT)
    assert gone.blk == {} and world.qemu_pids("web1") == [pid]
    view = qemu_view(world, "node-a", "web1")
    assert disk_id not in view["slots"] and not any(n.startswith("hd") for n in view["nodes"]), view
    assert Path(data).read_bytes().startswith(b"HOTPLUGGED\n")  # in the image, after blockdev-del
    rec = record_of(world, "node-a", "web1")
    assert rec.plugged.disks == () and rec.spec.disks == ()
    assert "No changes" in world.apply().out

    # A disk whose file is not there (and that the reconciler does not create): QEMU would refuse its
    # blockdev-add, so the plan refuses it, at its field, and apply touches nothing.
    declare(world, "web1", disks=[{"path": str(tmp_path / "missing.img")}])
    refused = world.cli("plan")
    assert refused.code == 1 and "spec.disks[0].path" in refused.text and "missing.img" in refused.text, \
        refused.text
    assert world.apply().code == 1 and world.qemu_pids("web1") == [pid]
    assert record_of(world, "node-a", "web1").spec.disks == ()


def test_a_disks_cache_changed_live_by_blockdev_reopen(world: World, tmp_path: Path) -> None:
    """none -> writeback -> unsafe (the device's write-cache stays on): both nodes reopened with the new
    flags, same process, the disk still written through; writethrough (write-cache off) is a restart."""
    data = image(tmp_path, "data.img", 4 * MIB)
    declare(world, "web1", disks=[{"path": data, "cache": "none"}])
    assert world.apply().code == 0
    booted(world, "web1")
    (pid,) = world.qemu_pids("web1")

    def cache(node: str) -> dict[str, bool]:
        async def read() -> dict[str, bool]:
            s = await qmp.connect(world.paths("node-a", "web1").qmp, 5.0)
            try:
                nodes = await s.execute("query-named-block-nodes", {"flat": True})
                return next(n["cache"] for n in nodes if n["node-name"] == node)
            finally:
                await s.close()
        return asyncio.run(read())

    assert cache("disk0-file") == {"writeback": True, "direct": True, "no-flush": False}
    for mode, direct, no_flush in (("writeback", False, False), ("unsafe", False, True)):
        declare(world, "web1", disks=[{"path": data, "cache": mode}])
        plan = world.cli("plan")
        assert f'disks[0].cache: "none" -> "{mode}"' in plan.out or "# live" in plan.out, plan.text
        done = world.apply()
        assert done.code == 0 and f"{data} cache {mode}" in done.out, done.text
        for node in ("disk0-file", "disk0-format"):
            assert cache(node) == {"writeback": True, "direct": direct, "no-flush": no_flush}, node
        assert world.qemu_pids("web1") == [pid] and "No changes" in world.apply().out
    with console(world, "node-a", "web1") as con:
        con.send("write vda REOPENED\n")
        con.wait_for("reconciler-guest: wrote vda REOPENED", REPORT_TIMEOUT)
    assert Path(data).read_bytes().startswith(b"REOPENED\n")

    declare(world, "web1", disks=[{"path": data, "cache": "writethrough"}])
    plan = world.cli("plan")
    assert "-/+ web1" in plan.out and 'disks[0].cache: "unsafe" -> "writethrough"  # forces restart' in \
        plan.out, plan.text


def test_a_nic_added_and_removed_in_the_same_process(world: World) -> None:
    declare(world, "web1", nics=[MAC0])
    assert world.apply().code == 0
    log, first = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    assert sorted(first.nics.values()) == [MAC0]

    declare(world, "web1", nics=[MAC0, MAC1])
    added = world.apply()
    assert added.code == 0 and f"NIC {MAC1} at slot" in added.out, added.text
    seen = wait_for_report(log, lambda r: MAC1 in r.nics.values(), REPORT_TIMEOUT)
    assert sorted(seen.nics.values()) == [MAC0, MAC1] and world.qemu_pids("web1") == [pid]
    view = qemu_view(world, "node-a", "web1")
    assert view["netdevs"] == [devplug.netdev_id(devplug.nic_id(MAC1))], view
    assert "No changes" in world.apply().out

    declare(world, "web1", nics=[MAC0])
    removed = world.apply()
    assert removed.code == 0 and f"removed NIC {MAC1}" in removed.out, removed.text
    back = wait_for_report(log, lambda r: sorted(r.nics.values()) == [MAC0], REPORT_TIMEOUT)
    assert back.cpus == 1 and world.qemu_pids("web1") == [pid]
    view = qemu_view(world, "node-a", "web1")
    assert view["netdevs"] == [] and devplug.nic_id(MAC1) not in view["slots"], view

    # A NIC of the boot command line stays until a restart (a migration target is built from it).
    declare(world, "web1", nics=[MAC1])
    plan = world.cli("plan")
    assert "-/+ web1" in plan.out and "forces restart" in plan.out, plan.text


def test_a_tap_nic_added_live_runs_the_same_ifup_hook_as_at_boot(world: World, tmp_path: Path) -> None:
    """A bridge-mode NIC with its own `hook` (so no Linux bridge is needed): QEMU creates the tap at
    netdev_add and runs ifup.py, which finds the hook file the update wrote and execs the hook with the
    seed's environment. The tap (down, in no bridge: no traffic) goes with its netdev."""
    marker = tmp_path / "hook.log"
    hook = tmp_path / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1 $INTERFACE $MAC $INSTANCE" >> {marker}\n')
    hook.chmod(0o755)
    declare(world, "web1", nics=[MAC0])
    assert world.apply().code == 0
    log, _ = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    tap = {"mode": "bridge", "mac": MAC1, "bridge": "rcnobr0", "hook": str(hook)}  # the hook plugs it
    world.instance("web1", "node-a", disks=[], nics=[{"mode": "user", "mac": MAC0}, tap])
    added = world.apply()
    assert added.code == 0 and f"NIC {MAC1} at slot" in added.out, added.text
    wait_for_report(log, lambda r: MAC1 in r.nics.values(), REPORT_TIMEOUT)
    ifname = tap_ifname(world.node("node-a"), "web1", 1)  # index 1: the boot NIC has 0
    assert marker.read_text() == f"{ifname} {ifname} {MAC1} web1\n"
    assert Path(f"/sys/class/net/{ifname}").exists() and world.qemu_pids("web1") == [pid]
    assert [p.index for p in record_of(world, "node-a", "web1").plugged.nics] == [1]

    declare(world, "web1", nics=[MAC0])
    assert world.apply().code == 0
    wait_for_report(log, lambda r: sorted(r.nics.values()) == [MAC0], REPORT_TIMEOUT)
    assert not Path(f"/sys/class/net/{ifname}").exists() and world.qemu_pids("web1") == [pid]


def test_a_live_migration_after_disk_and_nic_hotplugs(world: World, tmp_path: Path) -> None:
    data = image(tmp_path, "data.img", 4 * MIB)
    declare(world, "web1")
    assert world.apply().code == 0
    log, _ = booted(world, "web1")
    declare(world, "web1", disks=[{"path": data}], nics=[MAC0, MAC1])
    assert world.apply().code == 0
    wait_for_report(log, lambda r: "vda" in r.blk and MAC1 in r.nics.values(), REPORT_TIMEOUT)
    source = qemu_view(world, "node-a", "web1")["slots"]
    (old_pid,) = world.qemu_pids("web1")

    declare(world, "web1", "node-b", disks=[{"path": data}], nics=[MAC0, MAC1])
    moved = world.apply()
    assert moved.code == 0 and "web1: migrated node-a -> node-b" in moved.out, moved.text
    (pid,) = world.qemu_pids("web1")
    assert pid != old_pid
    target = qemu_view(world, "node-b", "web1")["slots"]
    for dev in (devplug.disk_id(data), devplug.nic_id(MAC1)):
        assert target[dev] == source[dev], (source, target)  # same device, same address
    rec = record_of(world, "node-b", "web1")
    assert len(rec.plugged.disks) == 1 and len(rec.plugged.nics) == 1
    target_log = SerialLog(world.serial_log("node-b", "web1"))
    target_log.wait_for(TICK_PREFIX, REPORT_TIMEOUT)  # the guest keeps running: no second boot
    assert "ready" not in world.serial_log("node-b", "web1").read_text()
    with console(world, "node-b", "web1") as con:  # and its disk still works
        con.send("write vda MIGRATED\n")
        con.wait_for("reconciler-guest: wrote vda MIGRATED", REPORT_TIMEOUT)
    assert Path(data).read_bytes().startswith(b"MIGRATED\n")
    assert "No changes" in world.apply().out

    # Still removable live on the target.
    declare(world, "web1", "node-b", disks=[], nics=[MAC0])
    done = world.apply()
    assert done.code == 0 and "removed" in done.out, done.text
    wait_for_report(target_log, lambda r: r.blk == {} and MAC1 not in r.nics.values(), REPORT_TIMEOUT)
    assert world.qemu_pids("web1") == [pid]


def test_sigkill_of_apply_mid_disk_hotplug_then_apply_converges(world: World, tmp_path: Path) -> None:
    """Killed right after QEMU created the disk's block node (blockdev-add done, device_add not yet, seen
    by pausing the apply at that command): the next plan shows the change again, the next apply deletes
    the orphan node, plugs the disk once, and the guest sees it (one QEMU, nothing leaked)."""
    data = image(tmp_path, "data.img", 8 * MIB)
    declare(world, "web1")
    assert world.apply().code == 0
    log, _ = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    declare(world, "web1", disks=[{"path": data}])

    proc = apply_killed_after(world, "blockdev-add")
    assert proc.returncode == -signal.SIGKILL
    assert world.qemu_pids("web1") == [pid]
    view = qemu_view(world, "node-a", "web1")
    disk_id = devplug.disk_id(data)
    assert f"{disk_id}-format" in view["nodes"] and disk_id not in view["slots"], view  # half done
    assert record_of(world, "node-a", "web1").spec.disks == ()
    plan = world.cli("plan")  # the change again, and what QEMU has that the record does not say
    assert plan.code == 0 and "(update in place)" in plan.out, plan.text
    assert f"# QEMU: block node {disk_id}-format without its device" in plan.out, plan.text

    again = world.apply()
    assert again.code == 0 and f"unused node {disk_id}-format removed" in again.out, again.text
    wait_for_report(log, lambda r: r.blk.get("vda") == 8 * MIB, REPORT_TIMEOUT)
    view = qemu_view(world, "node-a", "web1")
    assert view["nodes"].count(f"{disk_id}-format") == 1 and disk_id in view["slots"], view
    assert world.qemu_pids("web1") == [pid]
    rec = record_of(world, "node-a", "web1")
    assert [p.id for p in rec.plugged.disks] == [disk_id]
    assert not Path(world.paths("node-a", "web1").intent).exists()
    assert "No changes" in world.apply().out


def test_a_killed_hotplug_then_the_manifest_reverted_is_undone_live(world: World, tmp_path: Path) -> None:
    """Killed after netdev_add, then the NIC taken out of the manifest again: the spec is as recorded, but
    QEMU is not; the plan says so (from QEMU's own account), and the apply removes the netdev live."""
    declare(world, "web1")
    assert world.apply().code == 0
    booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    declare(world, "web1", nics=[MAC0, MAC1])
    assert apply_killed_after(world, "netdev_add").returncode == -signal.SIGKILL
    netdev = devplug.netdev_id(devplug.nic_id(MAC1))

    declare(world, "web1")
    plan = world.cli("plan")
    assert plan.code == 0 and "~ web1 on node-a (update in place)" in plan.out, plan.text
    assert "a live change was killed halfway" in plan.out, plan.text
    assert f"# QEMU: netdev {netdev} without its device" in plan.out, plan.text
    assert Path(world.paths("node-a", "web1").intent).exists()  # kept while QEMU differs
    again = world.apply()
    assert again.code == 0 and f"unused netdev {netdev} removed" in again.out, again.text
    assert world.qemu_pids("web1") == [pid]
    assert not Path(world.paths("node-a", "web1").intent).exists()
    assert "No changes" in world.cli("plan").out


UNPLUG_DEADLINE = 3.0  # the paused guest releases nothing: the apply waits all of it, twice


def test_a_disk_the_guest_holds_is_reported_then_restarted_only_if_allowed(world: World,
                                                                         tmp_path: Path) -> None:
    """The guest is paused (QMP stop) right before the apply's device_del, so it cannot release the disk:
    under updatePolicy Pending the apply reports it after the deadline and changes nothing else; once the
    guest runs again it releases the disk and the next apply converges. Under Immediate, the same hold
    restarts the instance with the new spec."""
    data = image(tmp_path, "data.img", 4 * MIB)
    declare(world, "web1", updatePolicy="Pending")
    assert world.apply().code == 0
    log, _ = booted(world, "web1")
    (pid,) = world.qemu_pids("web1")
    declare(world, "web1", disks=[{"path": data}], updatePolicy="Pending")
    assert world.apply().code == 0
    wait_for_report(log, lambda r: "vda" in r.blk, REPORT_TIMEOUT)

    declare(world, "web1", disks=[], updatePolicy="Pending")
    held = _apply_pausing_the_guest_before("device_del", world)
    disk_id = devplug.disk_id(data)
    assert held.returncode == 1, held.stdout + held.stderr
    assert f"the guest did not release {disk_id} within {UNPLUG_DEADLINE:g}s; updatePolicy Pending: left " \
           "for the next restart" in held.stdout, held.stdout + held.stderr
    assert world.qemu_pids("web1") == [pid] and record_of(world, "node-a", "web1").spec.disks[0].path == data
    _qmp(world, "cont")  # the guest runs again and releases the disk it was asked for
    wait_for_report(log, lambda r: r.blk == {}, REPORT_TIMEOUT)
    again = world.apply()  # the eject may still be under way (then awaited) or done (its node left)
    assert again.code == 0 and (f"unused node {disk_id}-format removed" in again.out
                                or f"removed {data}" in again.out), again.text
    assert world.qemu_pids("web1") == [pid] and record_of(world, "node-a", "web1").spec.disks == ()
    view = qemu_view(world, "node-a", "web1")
    assert disk_id not in view["slots"] and not any(n.startswith("hd") for n in view["nodes"]), view

    declare(world, "web1", disks=[{"path": data}])  # Immediate (the default) from here
    assert world.apply().code == 0
    wait_for_report(log, lambda r: "vda" in r.blk, REPORT_TIMEOUT)
    declare(world, "web1", disks=[])
    restarted = _apply_pausing_the_guest_before("device_del", world)
    assert restarted.returncode == 0, restarted.stdout
    assert "restarting (updatePolicy Immediate)" in restarted.stdout, restarted.stdout
    (new_pid,) = world.qemu_pids("web1")
    assert new_pid != pid
    rec = record_of(world, "node-a", "web1")
    assert rec.spec.disks == () and rec.boot_spec is None and rec.plugged.disks == ()
    assert "No changes" in world.apply().out


def _qmp(world: World, command: str) -> None:
    async def run() -> None:
        s = await qmp.connect(world.paths("node-a", "web1").qmp, 5.0)
        try:
            await s.execute(command)
        finally:
            await s.close()
    asyncio.run(run())


def _apply_pausing_the_guest_before(command: str, world: World) -> subprocess.CompletedProcess[str]:
    """`apply` as a child that sends QMP `stop` (pausing the guest) right before its first `command`."""
    env = dict(os.environ, RECONCILER_TEST_PAUSE_BEFORE=command)
    pauser = _PAUSER.replace("UNPLUG_DEADLINE", repr(UNPLUG_DEADLINE))
    return subprocess.run([sys.executable, "-c", pauser, "apply", "--yes", str(world.manifests)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, check=False)


_PAUSER = """
import dataclasses, os, sys
from reconciler import qmp
from reconciler.executor import context
want = os.environ["RECONCILER_TEST_PAUSE_BEFORE"]
made = context.Context.__init__
def init(self, *args, **kwargs):  # a shorter wait for the paused guest's release than the 15 s default
    made(self, *args, **kwargs)
    self.deadlines = dataclasses.replace(self.deadlines, unplug=UNPLUG_DEADLINE)
context.Context.__init__ = init
real = qmp.QemuQmpSession.execute
paused = []
async def execute(self, command, arguments=None, timeout=5.0):
    if command == want and not paused:
        paused.append(await real(self, "stop", None, timeout))
        print("paused:", await real(self, "query-status", None, timeout), file=sys.stderr)
    return await real(self, command, arguments, timeout)
qmp.QemuQmpSession.execute = execute
from reconciler.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
sys.exit(code)
"""


