"""Live memory and vCPU changes: the room a QEMU has for them, and what was plugged into it.

A running QEMU can change its memory and vCPUs only within limits fixed by its command line: the
virtio-balloon device (present when the spec sets `maxMemory`) moves the guest's memory anywhere up to
what is plugged; `-m SIZE,slots=N,maxmem=MAX` leaves room for DIMMs (`pc-dimm` on a `memory-backend-ram`)
up to MAX; `-smp N,maxcpus=MAX` for CPUs up to MAX. This module holds those rules, the devices a live
change plugs (kept in the applied record, so a migration target is started with them), and the reading
of QEMU's own account (`query-memory-devices`, `query-hotpluggable-cpus`) that the executor compares
with the spec after each change. Pure: no I/O.

Decisions:
- Memory goes down (and back up) with the balloon only; DIMMs are never unplugged (a Linux guest
  releases hotplugged memory only if it was onlined movable, which the guest decides). So the balloon
  target is always the spec's memory, and a DIMM is added only when the memory plugged is below it.
- A DIMM's size is what is missing, rounded up to 128 MiB (the x86-64 Linux memory block: a smaller
  DIMM cannot be onlined), but never past maxMemory; the balloon then trims the rest. Keep
  `maxMemory - memory` a multiple of 128 MiB. Eight slots (DIMM_SLOTS) bound how many changes grow it.
- vCPUs go up live (device_add of the free slots `query-hotpluggable-cpus` lists, lowest first) and back
  down to the boot count (device_del of the hotplugged ones, highest first; the guest's ACPI eject
  releases each, DEVICE_DELETED, within Deadlines.unplug: the test guest's Linux does). Below the boot
  count is a restart: QEMU cannot unplug a CPU of its command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reconciler.devplug import DeviceView, PluggedDisk, PluggedNic
from reconciler.model import InstanceSpec
from reconciler.values import Value

MIB = 1024 * 1024
DIMM_SLOTS = 8
DIMM_ALIGN_MIB = 128
BALLOON_ID = "balloon0"
_PERIPHERAL = "/machine/peripheral/"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Dimm(Value):
    """A hotplugged memory DIMM: device `id` (dimmN) on the backend object `backend` (mem-dimmN)."""

    id: str
    size_mib: int

    @property
    def backend(self) -> str:
        return f"mem-{self.id}"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Cpu(Value):
    """A hotplugged vCPU: the device `driver` (e.g. qemu64-x86_64-cpu) with its topology `props`."""

    id: str
    driver: str
    props: tuple[tuple[str, int], ...]  # socket-id, core-id, thread-id, node-id (those QEMU lists)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Plugged(Value):
    """What was hotplugged into a running QEMU since its start, as QEMU reports it."""

    dimms: tuple[Dimm, ...] = ()
    cpus: tuple[Cpu, ...] = ()
    disks: tuple[PluggedDisk, ...] = ()  # reconciler.devplug: disks and NICs added live, with their slots
    nics: tuple[PluggedNic, ...] = ()

    @property
    def dimm_mib(self) -> int:
        return sum(d.size_mib for d in self.dimms)

    def next_dimm_id(self) -> str:
        taken = {d.id for d in self.dimms}
        return next(f"dimm{i}" for i in range(len(taken) + 1) if f"dimm{i}" not in taken)


def memory_room(spec: InstanceSpec) -> int:
    """MiB that DIMMs may add to this spec's boot memory (0: no slots; negative: memory is above max)."""
    if spec.max_memory_mib is None:
        return 0
    return spec.max_memory_mib - spec.memory_mib


def live_memory_ok(running: InstanceSpec, memory_mib: int) -> bool:
    """Whether the QEMU started for `running`'s maximum can be given `memory_mib` live."""
    return running.max_memory_mib is not None and 0 < memory_mib <= running.max_memory_mib


def live_vcpus_ok(running: InstanceSpec, boot_vcpus: int, new: int) -> bool:
    """Whether vCPUs can go to `new` live: within the maximum the QEMU was started with, and not below
    the vCPUs it was started with (boot CPUs cannot be unplugged; hotplugged ones can)."""
    return running.max_vcpus is not None and boot_vcpus <= new <= running.max_vcpus


def dimm_to_add(plugged_mib: int, target_mib: int, max_mib: int) -> int:
    """MiB of a new DIMM that brings the memory plugged (boot plus DIMMs) to at least the target (0: none)."""
    if target_mib <= plugged_mib:
        return 0
    missing = target_mib - plugged_mib
    rounded = -(-missing // DIMM_ALIGN_MIB) * DIMM_ALIGN_MIB
    return min(rounded, max_mib - plugged_mib)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class SizeView(Value):
    """QEMU's account of memory and vCPUs (reconciler.qemuview reads it)."""

    base_mib: int
    plugged: Plugged  # the DIMMs and CPUs of ours (disks and NICs: devplug.DeviceView)
    balloon_mib: int | None  # None: no balloon device
    vcpus: int
    slots: Any  # query-hotpluggable-cpus, as QEMU answered it
    orphans: tuple[str, ...] = ()  # DIMM backends without their DIMM (a run killed between the two)

    @property
    def memory_mib(self) -> int:
        return self.base_mib + self.plugged.dimm_mib

    @classmethod
    def from_replies(cls, summary: Any, devices: Any, slots: Any, cpus: Any, memdevs: Any,
                     balloon: int | None) -> SizeView:
        """From query-memory-size-summary, -memory-devices, -hotpluggable-cpus, -cpus-fast, -memdev and
        query-balloon's `actual` in bytes (None: no balloon)."""
        base = summary.get("base-memory") if isinstance(summary, Mapping) else None
        plugged = plugged_from_qmp(devices, slots)
        return cls((base if isinstance(base, int) else 0) // MIB, plugged,
                   None if balloon is None else balloon // MIB, cpu_count(cpus), slots,
                   tuple(orphan_backends(memdevs, plugged)))


def plugged_from_qmp(memory_devices: Any, hotpluggable_cpus: Any) -> Plugged:
    """The hotplugged devices in QEMU's answers to query-memory-devices and query-hotpluggable-cpus (the
    ones we added: they have ids of ours; boot CPUs live outside /machine/peripheral/)."""
    dimms = []
    for dev in memory_devices if isinstance(memory_devices, list) else ():
        data = dev.get("data") if isinstance(dev, Mapping) else None
        if isinstance(data, Mapping) and dev.get("type") == "dimm" and isinstance(data.get("id"), str):
            dimms.append(Dimm(data["id"], int(data.get("size", 0)) // MIB))
    cpus = []
    for slot in hotpluggable_cpus if isinstance(hotpluggable_cpus, list) else ():
        path = slot.get("qom-path") if isinstance(slot, Mapping) else None
        if isinstance(path, str) and path.startswith(_PERIPHERAL):
            cpus.append(Cpu(path[len(_PERIPHERAL):], str(slot.get("type")), _props(slot)))
    return Plugged(tuple(sorted(dimms, key=lambda d: d.id)), tuple(sorted(cpus, key=lambda c: c.props)))


def orphan_backends(memdevs: Any, plugged: Plugged) -> list[str]:
    """Our DIMM backends (query-memdev) with no DIMM on them: left by a run killed between its object-add
    and its device_add; they hold the id the next DIMM would take (and host memory)."""
    used = {d.backend for d in plugged.dimms}
    ids = [m.get("id") for m in memdevs if isinstance(m, Mapping)] if isinstance(memdevs, list) else []
    return sorted(i for i in ids if isinstance(i, str) and i.startswith("mem-dimm") and i not in used)


def free_cpu_slots(hotpluggable_cpus: Any) -> list[Cpu]:
    """The empty CPU slots, lowest topology first, as the devices that would fill them."""
    free: list[Cpu] = []
    for slot in hotpluggable_cpus if isinstance(hotpluggable_cpus, list) else ():
        if isinstance(slot, Mapping) and "qom-path" not in slot:
            props = _props(slot)
            name = "-".join(str(v) for k, v in props if k != "node-id")
            free.append(Cpu(f"vcpu{name}", str(slot.get("type")), props))
    return sorted(free, key=lambda c: tuple(v for _, v in c.props))


def _props(slot: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    raw = slot.get("props")
    props = raw if isinstance(raw, Mapping) else {}
    order = ("socket-id", "core-id", "thread-id", "node-id")
    return tuple((k, int(props[k])) for k in order if isinstance(props.get(k), int))


def cpu_count(cpus_fast: Any) -> int:
    """Online vCPUs in QEMU's view (query-cpus-fast)."""
    return len(cpus_fast) if isinstance(cpus_fast, Sequence) else 0


def leftovers(recorded: Plugged, sizes: SizeView | None, devices: DeviceView | None,
              names: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """How QEMU's plugged devices differ from what the record says was plugged live: what a live change
    killed halfway left (the next live update removes or records each). `names`: device id -> how to
    show it (a disk's path, a NIC's MAC), where known. Empty: QEMU and the record agree."""
    def shown(dev: str) -> str:
        return f"{names[dev]} ({dev})" if names and dev in names else dev

    out: list[str] = []
    if devices is not None:
        out += [f"block node {n} without its device" for n in devices.unused_nodes]
        out += [f"netdev {n} without its device" for n in devices.unused_netdevs]
        known = {p.id for p in recorded.disks} | {p.id for p in recorded.nics}
        out += [f"device {shown(d)} plugged, not in the record"
                for d in devices.live_devices if d not in known]
        out += [f"device {shown(d)} in the record, not plugged"
                for d in sorted(known - devices.slots.keys())]
    if sizes is not None:
        out += [f"memory backend {b} without its DIMM" for b in sizes.orphans]
        dimms = {d.id: d.size_mib for d in sizes.plugged.dimms}
        was = {d.id for d in recorded.dimms}
        out += [f"DIMM {i} ({mib} MiB) plugged, not in the record" for i, mib in sorted(dimms.items())
                if i not in was]
        out += [f"DIMM {i} in the record, not plugged" for i in sorted(was - dimms.keys())]
        cpus, had = {c.id for c in sizes.plugged.cpus}, {c.id for c in recorded.cpus}
        out += [f"vCPU {c} plugged, not in the record" for c in sorted(cpus - had)]
        out += [f"vCPU {c} in the record, not plugged" for c in sorted(had - cpus)]
    return tuple(out)
