"""Live disk and NIC changes: which ones a running QEMU can take, the names and PCI slots of what a live
change plugs, and the reading of QEMU's account of them (query-pci, query-block, query-named-block-nodes).

Rules (facts of QEMU 7.2, probed with its QMP; the e2e tests in tests/e2e/test_live_devices.py):
- Hotplug needs a PCI bus with hotplug: `pc` (i440fx, ACPI PCI hotplug on bus 0). q35's root complex has
  none (it would need pcie-root-ports at boot), so on q35 a disk or NIC change is a restart.
- A disk is plugged as `blockdev-add` (one command: the format node with its file node inline, so a run
  killed there leaves one node or none) and `device_add virtio-blk-pci`; only the virtio bus is live
  (ide-hd cannot be hotplugged; SCSI would need the controller at boot). A boot disk is never added live.
- A NIC is `netdev_add` (user, or tap through the same ifup hook as at boot) and `device_add` of its model.
- Removal is `device_del`, the guest's release (DEVICE_DELETED), then `blockdev-del` / `netdev_del`. Only
  what was added live is removed live: a device of the boot command line stays until a restart, because a
  migration target is started from that command line (plus the live devices, at their slots) and QEMU's
  device state must match the source's.
- Each device added live gets an explicit slot (`addr=`, the lowest one free in query-pci), recorded, so
  a migration target creates it at the same address.
- `readOnly` changes are a restart: blockdev-reopen to read-only is refused while the device writes
  ("Read-only block node ... cannot support read-write users") and the guest's read-only flag is fixed
  when the device is realized. `cache` changes are live (blockdev-reopen of both nodes) when the device's
  write-cache stays (none/writeback/unsafe among themselves, writethrough/directsync): that flag is the
  device's, fixed at its realize. Not for an overlay on a baseImage (the reopen would name its chain).
- Identity: a disk is its path, a NIC its MAC. Any other change to an entry is a restart.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler import digest
from reconciler.model import CacheMode, Disk, DiskBus, InstanceSpec, Nic
from reconciler.values import Value

FIRST_SLOT = 2  # bus 0 slot 0: host bridge, 1: PIIX3
LAST_SLOT = 31
# cache mode -> (cache.direct, cache.no-flush, device write-cache), as QEMU's -drive cache= maps them
CACHE_FLAGS = {
    CacheMode.NONE: (True, False, True),
    CacheMode.WRITEBACK: (False, False, True),
    CacheMode.WRITETHROUGH: (False, False, False),
    CacheMode.DIRECTSYNC: (True, False, False),
    CacheMode.UNSAFE: (False, True, True),
}


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class PluggedDisk(Value):
    """A disk added live: device `id` at PCI `slot` of bus 0, on the block node `{id}-format`."""

    id: str
    slot: int
    disk: Disk


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class PluggedNic(Value):
    """A NIC added live: device `id` at `slot`, on netdev `{id}-net`; `index` names its tap."""

    id: str
    slot: int
    index: int
    nic: Nic


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DeviceChange(Value):
    """What a live change of disks and NICs does, in this order: remove, reopen, add."""

    remove_disks: tuple[Disk, ...] = ()
    reopen_disks: tuple[Disk, ...] = ()  # the new entry: its cache changed, write-cache the same
    add_disks: tuple[Disk, ...] = ()
    remove_nics: tuple[Nic, ...] = ()
    add_nics: tuple[Nic, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.remove_disks or self.reopen_disks or self.add_disks or self.remove_nics
                    or self.add_nics)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DeviceView(Value):
    """QEMU's account of the devices on bus 0 and of the block nodes and netdevs of ours
    (reconciler.qemuview reads it)."""

    slots: dict[str, int]  # device id -> slot of bus 0
    pci: Any  # query-pci as QEMU answered it
    nodes: frozenset[str]  # top nodes of disks added live
    attached: frozenset[str]  # node names devices use
    netdevs: frozenset[str]  # netdevs of NICs added live

    @classmethod
    def from_replies(cls, pci: Any, block: Any, named: Any, network: Any) -> DeviceView:
        """From query-pci, query-block, query-named-block-nodes (flat) and HMP `info network`."""
        return cls(pci_slots(pci), pci, frozenset(our_nodes(named)), frozenset(attached_nodes(block)),
                   frozenset(our_netdevs(network if isinstance(network, str) else "")))

    @property
    def unused_nodes(self) -> list[str]:
        """Block nodes of ours no device uses: left by a run killed between blockdev-add and device_add."""
        return sorted(self.nodes - self.attached)

    @property
    def unused_netdevs(self) -> list[str]:
        return sorted(n for n in self.netdevs if n.removesuffix("-net") not in self.slots)

    @property
    def live_devices(self) -> list[str]:
        """The ids of the disks and NICs plugged live (ours: hd…, nh…)."""
        return sorted(d for d in self.slots if d.startswith(("hd", "nh")))


def disk_id(path: str) -> str:
    """The device id of a disk added live (and `-file`/`-format` its nodes): stable across runs."""
    return "hd" + digest.sha256_hex(path.encode())[:12]


def nic_id(mac: str) -> str:
    return "nh" + mac.replace(":", "").lower()


def netdev_id(device: str) -> str:
    return f"{device}-net"


def hotplug_machine(machine: str) -> bool:
    """Whether the machine type has a PCI bus QEMU hotplugs into (i440fx)."""
    return machine == "pc" or machine.startswith("pc-i440fx-")


def _same_but_size(o: Disk, n: Disk) -> bool:
    """Equal but for a grown size of a provisioned disk and the deletePolicy (both need no QEMU change)."""
    grew = n.provisioned and o.size is not None and n.size is not None and n.size > o.size
    return replace(o, size=n.size if grew else o.size, delete_policy=n.delete_policy) == n


def cache_live(o: Disk, n: Disk) -> bool:
    """Only the cache mode differs, and not in the device's write-cache flag (and the disk has no backing
    image: a reopen would have to name the whole chain)."""
    return (o.cache != n.cache and o.base_image is None and CACHE_FLAGS[o.cache][2] == CACHE_FLAGS[n.cache][2]
            and _same_but_size(replace(o, cache=n.cache), n))


def device_change(boot: InstanceSpec, old: InstanceSpec, new: InstanceSpec) -> DeviceChange | None:
    """The live change from `old` (what the QEMU started as `boot` has now) to `new`'s disks and NICs;
    None when any part needs a restart. Unchanged devices (order aside) give an empty change."""
    disks = disk_change(boot, old.disks, new.disks)
    nics = nic_change(boot, old.nics, new.nics)
    if disks is None or nics is None:
        return None
    return replace(disks, remove_nics=nics.remove_nics, add_nics=nics.add_nics)


def disk_change(boot: InstanceSpec, old: tuple[Disk, ...], new: tuple[Disk, ...]) -> DeviceChange | None:
    """The disks part of device_change (None: a restart)."""
    change = _disks(boot, old, new)
    if change is not None and not change.empty and not hotplug_machine(boot.machine):
        return None
    return change


def nic_change(boot: InstanceSpec, old: tuple[Nic, ...], new: tuple[Nic, ...]) -> DeviceChange | None:
    """The NICs part of device_change (None: a restart)."""
    change = _nics(boot, old, new)
    if change is not None and not change.empty and not hotplug_machine(boot.machine):
        return None
    return change


def _disks(boot: InstanceSpec, old: tuple[Disk, ...], new: tuple[Disk, ...]) -> DeviceChange | None:
    was = {d.path: d for d in old}
    now = {d.path: d for d in new}
    booted = {d.path for d in boot.disks}
    reopen = []
    for path in was.keys() & now.keys():
        o, n = was[path], now[path]
        if cache_live(o, n):
            reopen.append(n)
        elif not _same_but_size(o, n):
            return None
    added = [d for d in new if d.path not in was]
    removed = [d for d in old if d.path not in now]
    if any(d.bus is not DiskBus.VIRTIO or d.boot for d in added):
        return None
    if any(d.path in booted for d in removed):
        return None
    return DeviceChange(remove_disks=tuple(removed), reopen_disks=tuple(sorted(reopen, key=lambda d: d.path)),
                        add_disks=tuple(added))


def _nics(boot: InstanceSpec, old: tuple[Nic, ...], new: tuple[Nic, ...]) -> DeviceChange | None:
    was = {n.mac.lower(): n for n in old}
    now = {n.mac.lower(): n for n in new}
    if any(was[m] != now[m] for m in was.keys() & now.keys()):
        return None
    booted = {n.mac.lower() for n in boot.nics}
    removed = [n for n in old if n.mac.lower() not in now]
    if any(n.mac.lower() in booted for n in removed):
        return None
    added = tuple(n for n in new if n.mac.lower() not in was)
    return DeviceChange(remove_nics=tuple(removed), add_nics=added)


def free_slot(query_pci: Any, taken: Collection[int] = ()) -> int | None:
    """The lowest free slot of bus 0 (None: all taken)."""
    used = set(pci_slots(query_pci).values()) | _anonymous_slots(query_pci) | set(taken)
    return next((s for s in range(FIRST_SLOT, LAST_SLOT + 1) if s not in used), None)


def pci_slots(query_pci: Any) -> dict[str, int]:
    """Device id -> slot of bus 0, for the devices with an id (query-pci's qdev_id)."""
    return {d["qdev_id"]: d["slot"] for d in _bus0(query_pci) if d.get("qdev_id")}


def _anonymous_slots(query_pci: Any) -> set[int]:
    return {d["slot"] for d in _bus0(query_pci)}


def _bus0(query_pci: Any) -> list[Mapping[str, Any]]:
    for bus in query_pci if isinstance(query_pci, list) else ():
        if isinstance(bus, Mapping) and bus.get("bus") == 0 and isinstance(bus.get("devices"), list):
            return [d for d in bus["devices"] if isinstance(d, Mapping) and isinstance(d.get("slot"), int)]
    return []


def our_nodes(named_nodes: Any) -> set[str]:
    """Top nodes of disks added live (`hd…-format`), from query-named-block-nodes."""
    names = {n.get("node-name") for n in named_nodes if isinstance(n, Mapping)} \
        if isinstance(named_nodes, list) else set()
    return {n for n in names if isinstance(n, str) and n.startswith("hd") and n.endswith("-format")}


def attached_nodes(query_block: Any) -> set[str]:
    """Node names that a device uses (query-block's inserted media)."""
    out = set()
    for b in query_block if isinstance(query_block, list) else ():
        inserted = b.get("inserted") if isinstance(b, Mapping) else None
        if isinstance(inserted, Mapping) and isinstance(inserted.get("node-name"), str):
            out.add(inserted["node-name"])
    return out


def our_netdevs(info_network: str) -> set[str]:
    """Netdevs of NICs added live (`nh…-net`), from HMP `info network` (QEMU 7.2 has no QMP query for
    netdevs). Each client is a line `<id>: index=...`: a NIC's peer netdev indented under it as
    ` \\ <id>: ...`, a netdev without a NIC at the top level; NIC ids (`nh…`) lack the `-net`."""
    out = set()
    for line in info_network.splitlines():
        head = line.strip().removeprefix("\\").strip().split(":", 1)[0]
        if head.startswith("nh") and head.endswith("-net") and " " not in head:
            out.add(head)
    return out


def tap_indexes(boot: InstanceSpec, plugged: tuple[PluggedNic, ...], wanted: list[str]) -> dict[str, int]:
    """The tap index of each NIC device `wanted` live (ids, in spec order): its recorded one, else the
    lowest not used by the boot NICs (0..n-1), by a recorded NIC, or by one before it in `wanted`."""
    known = {p.id: p.index for p in plugged}
    taken = set(range(len(boot.nics))) | set(known.values())
    out = {}
    for dev in wanted:
        if dev in known:
            out[dev] = known[dev]
            continue
        index = next(i for i in range(len(taken) + 1) if i not in taken)
        taken.add(index)
        out[dev] = index
    return out
