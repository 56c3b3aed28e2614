"""Live disk and NIC changes in a running QEMU (the rules: reconciler.devplug), a part of executor.live.

Each step is skipped when QEMU already shows it done, so a run killed halfway is finished by the next:
1. Read QEMU's account: query-pci (device ids and slots), query-block (which nodes a device uses),
   query-named-block-nodes (our disks' nodes), HMP `info network` (our netdevs: QEMU 7.2 has no QMP query).
2. Leftovers of a killed run: a node of ours no device uses (`blockdev-add` done, `device_add` not, or
   `device_del` done, `blockdev-del` not) is deleted, and so is a netdev of ours without its NIC.
3. Removals: every device added live that the spec no longer has is `device_del`ed at once, then each
   DEVICE_DELETED (the guest's release) is awaited within Deadlines.unplug; its node or netdev then goes.
   A device the guest holds past the deadline raises UnplugTimeout (the caller restarts, if allowed).
4. Cache changes: `blockdev-reopen` of the disk's file and format nodes with the new cache flags.
5. Additions: a provisioned disk's image is created first (as a start would); `blockdev-add` (the format
   node with its file node inline) and `device_add virtio-blk-pci` at the lowest free slot (`addr=`); a
   NIC's `netdev_add` (a bridge tap runs the ifup hook, its file written first) and its `device_add`.
6. Read back and compare: the devices the spec adds live are there, those it removed are gone.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Any

from reconciler import devplug, qemuview
from reconciler.argv import DEFAULT_IFUP, NIC_DEVICE, hook_config, tap_ifname
from reconciler.errors import QmpCommandError, QmpError
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.start import create_disks
from reconciler.model import Disk, InstanceSpec, Nic, NicMode
from reconciler.node import Node
from reconciler.qmp import QmpSession
from reconciler.records import AppliedRecord


class UnplugTimeout(ActionFailed):
    """The guest did not release a device within its deadline (the message names them)."""


def node_names(boot: InstanceSpec, disk: Disk) -> tuple[str, str]:
    """(file node, format node) of a disk: `disk<i>` from the boot command line, else the live one's."""
    for i, d in enumerate(boot.disks):
        if d.path == disk.path:
            return f"disk{i}-file", f"disk{i}-format"
    dev = devplug.disk_id(disk.path)
    return f"{dev}-file", f"{dev}-format"


async def read(ctx: Context, s: QmpSession) -> devplug.DeviceView:
    return await qemuview.read_devices(s, ctx.deadlines.qmp)


async def converge(ctx: Context, node: Node, s: QmpSession, rec: AppliedRecord,
                   spec: InstanceSpec) -> tuple[list[str], devplug.DeviceChange]:
    """Steps 1-5 for `spec`'s disks and NICs; returns what was done."""
    boot = rec.launched_spec
    change = devplug.device_change(boot, rec.spec, spec)
    if change is None:
        raise ActionFailed("the disks or NICs changed in a way only a restart applies")
    steps: list[str] = []
    q = ctx.deadlines.qmp
    seen = await read(ctx, s)
    for top in seen.unused_nodes:
        await s.execute("blockdev-del", {"node-name": top}, timeout=q)
        steps.append(f"unused node {top} removed")
    for netdev in seen.unused_netdevs:
        await s.execute("netdev_del", {"id": netdev}, timeout=q)
        steps.append(f"unused netdev {netdev} removed")
    disks, nics = live_devices(boot, spec)
    wanted = set(disks) | set(nics)
    gone = [d for d in seen.live_devices if d not in wanted]
    if gone:
        await unplug(ctx, s, gone)
        for dev in gone:
            if dev.startswith("hd"):
                await s.execute("blockdev-del", {"node-name": f"{dev}-format"}, timeout=q)
            else:
                await _quiet(s, "netdev_del", {"id": devplug.netdev_id(dev)}, q)
        steps.append("removed " + ", ".join(_names(gone, rec)))
    for disk in change.reopen_disks:
        await s.execute("blockdev-reopen", {"options": reopen_options(boot, disk)}, timeout=q)
        steps.append(f"{disk.path} cache {disk.cache.value}")
    adding = [d for d in disks if d not in seen.slots] + [n for n in nics if n not in seen.slots]
    if adding:
        await create_disks(ctx, node, _only(spec, [disks[d] for d in adding if d in disks]))
        taken: set[int] = set()
        for dev in adding:
            slot = devplug.free_slot(seen.pci, taken)
            if slot is None:
                raise ActionFailed("no free PCI slot on bus 0: a restart is needed")
            taken.add(slot)
            if dev in disks:
                await _add_disk(ctx, s, dev, disks[dev], slot)
                steps.append(f"disk {disks[dev].path} at slot {slot}")
            else:
                index = tap_indexes(rec, nics)[dev]
                await _add_nic(ctx, node, s, spec.name, dev, nics[dev], slot, index)
                steps.append(f"NIC {nics[dev].mac} at slot {slot}")
    return steps, change


def live_devices(boot: InstanceSpec, spec: InstanceSpec) -> tuple[dict[str, Disk], dict[str, Nic]]:
    """The disks and NICs of `spec` that are not on the boot command line, by device id."""
    booted_disks = {d.path for d in boot.disks}
    booted_nics = {n.mac.lower() for n in boot.nics}
    disks = {devplug.disk_id(d.path): d for d in spec.disks if d.path not in booted_disks}
    nics = {devplug.nic_id(n.mac): n for n in spec.nics if n.mac.lower() not in booted_nics}
    return disks, nics


def plugged_now(rec: AppliedRecord, spec: InstanceSpec, seen: devplug.DeviceView) -> tuple[
        tuple[devplug.PluggedDisk, ...], tuple[devplug.PluggedNic, ...], str]:
    """What QEMU shows of the live devices `spec` wants, and what differs from it (empty: nothing)."""
    disks, nics = live_devices(rec.launched_spec, spec)
    problems = [f"{d.path} not plugged" for i, d in disks.items() if i not in seen.slots]
    problems += [f"NIC {n.mac} not plugged" for i, n in nics.items() if i not in seen.slots]
    stray = [d for d in seen.live_devices if d not in disks and d not in nics]
    problems += [f"device {d} still plugged" for d in stray]
    pdisks = tuple(sorted((devplug.PluggedDisk(i, seen.slots[i], d) for i, d in disks.items()
                           if i in seen.slots), key=lambda p: p.slot))
    indexes = tap_indexes(rec, nics)
    pnics = tuple(sorted((devplug.PluggedNic(i, seen.slots[i], indexes[i], n)
                          for i, n in nics.items() if i in seen.slots), key=lambda p: p.slot))
    return pdisks, pnics, "; ".join(problems)


def tap_indexes(rec: AppliedRecord, nics: dict[str, Nic]) -> dict[str, int]:
    """The tap index of each NIC added live (devplug.tap_indexes): the same in every run for a spec."""
    return devplug.tap_indexes(rec.launched_spec, rec.plugged.nics, list(nics))


def reopen_options(boot: InstanceSpec, disk: Disk) -> list[dict[str, Any]]:
    """blockdev-reopen's options for both nodes of `disk` with its (new) cache flags; all other options
    as they were opened (reopen resets what it is not given)."""
    file_node, fmt_node = node_names(boot, disk)
    direct, no_flush, _ = devplug.CACHE_FLAGS[disk.cache]
    cache = {"direct": direct, "no-flush": no_flush}
    driver = "host_device" if disk.path.startswith("/dev/") else "file"
    return [{"driver": driver, "node-name": file_node, "filename": disk.path, "read-only": disk.read_only,
             "cache": cache},
            {"driver": disk.format.value, "node-name": fmt_node, "file": file_node,
             "read-only": disk.read_only, "cache": cache}]


def _only(spec: InstanceSpec, disks: list[Disk]) -> InstanceSpec:
    return replace(spec, disks=tuple(disks))


async def _add_disk(ctx: Context, s: QmpSession, dev: str, disk: Disk, slot: int) -> None:
    direct, no_flush, write_cache = devplug.CACHE_FLAGS[disk.cache]
    cache = {"direct": direct, "no-flush": no_flush}
    driver = "host_device" if disk.path.startswith("/dev/") else "file"
    ro = {"read-only": True} if disk.read_only else {}
    blockdev = {"driver": disk.format.value, "node-name": f"{dev}-format", "cache": cache, **ro,
                "file": {"driver": driver, "node-name": f"{dev}-file", "filename": disk.path,
                         "cache": cache, **ro}}
    device: dict[str, object] = {"driver": "virtio-blk-pci", "id": dev, "drive": f"{dev}-format",
                                 "addr": f"0x{slot:x}"}
    if not disk.read_only:
        device["write-cache"] = "on" if write_cache else "off"
    q = ctx.deadlines.qmp
    await s.execute("blockdev-add", blockdev, timeout=q)
    await s.execute("device_add", device, timeout=q)


async def _add_nic(ctx: Context, node: Node, s: QmpSession, instance: str, dev: str, nic: Nic, slot: int,
                   index: int) -> None:
    q = ctx.deadlines.qmp
    netdev: dict[str, object] = {"type": "user", "id": devplug.netdev_id(dev)}
    if nic.mode is NicMode.BRIDGE:
        ifname = tap_ifname(node.spec, instance, index)
        await node.write_nic_file(instance, ifname, hook_config(instance, index, nic, ifname).to_json())
        netdev = {"type": "tap", "id": devplug.netdev_id(dev), "ifname": ifname, "script": DEFAULT_IFUP,
                  "downscript": "no"}
    await s.execute("netdev_add", netdev, timeout=q)
    device = {"driver": NIC_DEVICE[nic.model], "id": dev, "netdev": devplug.netdev_id(dev), "mac": nic.mac,
              "addr": f"0x{slot:x}"}
    await s.execute("device_add", device, timeout=q)


async def unplug(ctx: Context, s: QmpSession, devices: list[str]) -> None:
    """device_del each (one already being unplugged is fine), then await every DEVICE_DELETED (the
    device's own; its children's come without `device`). Disks, NICs, CPUs: all have ids of ours."""
    waiting = set(devices)
    for dev in devices:
        try:
            await s.execute("device_del", {"id": dev}, timeout=ctx.deadlines.qmp)
        except QmpCommandError as err:
            if err.error_class == "DeviceNotFound":
                waiting.discard(dev)  # released since it was read
            elif "already in the process of unplug" not in err.detail:
                raise
    deadline = time.monotonic() + ctx.deadlines.unplug
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # The event may have come before this session connected (a killed run's device_del).
            listed = await s.execute("qom-list", {"path": "/machine/peripheral"}, timeout=ctx.deadlines.qmp)
            left = waiting & {p.get("name") for p in listed if isinstance(p, dict)} \
                if isinstance(listed, list) else waiting
            if left:
                raise UnplugTimeout(f"the guest did not release {', '.join(sorted(left))} within "
                                    f"{ctx.deadlines.unplug:g}s")
            return
        try:
            event = await s.wait_event(["DEVICE_DELETED"], remaining)
        except QmpError:
            continue
        data = event.data if isinstance(event.data, dict) else {}
        waiting.discard(str(data.get("device")))


async def _quiet(s: QmpSession, command: str, args: dict[str, object], timeout: float) -> None:
    with contextlib.suppress(QmpCommandError):  # already gone
        await s.execute(command, args, timeout=timeout)


def _names(devices: list[str], rec: AppliedRecord) -> list[str]:
    known = {p.id: p.disk.path for p in rec.plugged.disks}
    known |= {p.id: f"NIC {p.nic.mac}" for p in rec.plugged.nics}
    return [known.get(d, d) for d in devices]

