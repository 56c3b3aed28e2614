"""The pure rules of live memory and vCPU changes (reconciler.hotplug) and the record fields that keep
them (boot spec, plugged devices), table-driven."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

import pytest

from reconciler import devplug, hotplug, records
from reconciler.hotplug import Cpu, Dimm, Plugged
from reconciler.model import Disk, InstanceSpec

MIB = hotplug.MIB


@pytest.mark.parametrize(("plugged", "target", "maximum", "size"), [
    (512, 256, 2048, 0),  # down: the balloon alone
    (512, 512, 2048, 0),
    (512, 513, 2048, 128),  # rounded up to the Linux memory block
    (512, 1024, 2048, 512),
    (512, 700, 2048, 256),
    (512, 2048, 2048, 1536),
    (512, 600, 600, 88),  # never past the maximum (the balloon trims the rest)
    (768, 1000, 2048, 256),  # DIMMs already plugged count
])
def test_dimm_to_add(plugged: int, target: int, maximum: int, size: int) -> None:
    assert hotplug.dimm_to_add(plugged, target, maximum) == size


def test_live_limits() -> None:
    roomy = InstanceSpec("a", 512, max_memory_mib=1024, vcpus=2, max_vcpus=4)
    plain = InstanceSpec("a", 512)
    assert hotplug.live_memory_ok(roomy, 1024) and hotplug.live_memory_ok(roomy, 64)
    assert not hotplug.live_memory_ok(roomy, 1025) and not hotplug.live_memory_ok(plain, 256)
    assert hotplug.live_vcpus_ok(roomy, 2, 4) and not hotplug.live_vcpus_ok(roomy, 2, 5)
    assert not hotplug.live_vcpus_ok(roomy, 2, 1)  # below the boot vCPUs: a restart
    assert hotplug.live_vcpus_ok(roomy, 1, 1)  # back down to the boot vCPUs: unplugged live
    assert not hotplug.live_vcpus_ok(plain, 1, 2)
    assert hotplug.memory_room(roomy) == 512 and hotplug.memory_room(plain) == 0


# QEMU 7.2's answers, as seen on the test guest after a DIMM and a CPU were added.
MEMORY_DEVICES = [{"type": "dimm", "data": {"memdev": "/objects/mem-dimm0", "hotplugged": True,
                                             "addr": 4294967296, "hotpluggable": True, "size": 134217728,
                                             "slot": 0, "node": 0, "id": "dimm0"}}]
HOTPLUGGABLE = [
    {"props": {"core-id": 2, "thread-id": 0, "node-id": 0, "socket-id": 0}, "vcpus-count": 1,
     "type": "qemu64-x86_64-cpu"},
    {"props": {"core-id": 1, "thread-id": 0, "node-id": 0, "socket-id": 0}, "vcpus-count": 1,
     "qom-path": "/machine/peripheral/vcpu0-1-0", "type": "qemu64-x86_64-cpu"},
    {"props": {"core-id": 0, "thread-id": 0, "node-id": 0, "socket-id": 0}, "vcpus-count": 1,
     "qom-path": "/machine/unattached/device[0]", "type": "qemu64-x86_64-cpu"},
]
PROPS_1 = (("socket-id", 0), ("core-id", 1), ("thread-id", 0), ("node-id", 0))


def test_plugged_from_qmp() -> None:
    assert hotplug.plugged_from_qmp(MEMORY_DEVICES, HOTPLUGGABLE) == Plugged(
        (Dimm("dimm0", 128),), (Cpu("vcpu0-1-0", "qemu64-x86_64-cpu", PROPS_1),))
    assert hotplug.plugged_from_qmp([], []) == Plugged()
    assert hotplug.plugged_from_qmp(None, {"junk": 1}) == Plugged()


def test_free_cpu_slots_lowest_first() -> None:
    free = hotplug.free_cpu_slots(HOTPLUGGABLE)
    assert [c.id for c in free] == ["vcpu0-2-0"]
    assert free[0].props == (("socket-id", 0), ("core-id", 2), ("thread-id", 0), ("node-id", 0))


def test_next_dimm_id_fills_gaps() -> None:
    assert Plugged().next_dimm_id() == "dimm0"
    assert Plugged((Dimm("dimm0", 128), Dimm("dimm2", 128))).next_dimm_id() == "dimm1"
    assert Plugged((Dimm("dimm0", 128), Dimm("dimm1", 256))).dimm_mib == 384


def test_record_round_trips_boot_spec_and_plugged() -> None:
    spec = InstanceSpec("web1", 128, max_memory_mib=384, max_vcpus=2)
    rec = records.AppliedRecord.create(spec, "node-a", ("qemu",), "7.2.0", 10, 1.0, 2.0)
    text = records.to_json(rec)
    assert "boot_spec" not in text and "plugged" not in text  # unchanged for records without live changes
    assert records.from_json(text) == rec and rec.launched_spec == spec
    live = replace(rec, spec=replace(spec, memory_mib=256, vcpus=2), boot_spec=spec,
                   plugged=Plugged((Dimm("dimm0", 128),), (Cpu("vcpu0-1-0", "qemu64-x86_64-cpu", PROPS_1),)))
    back = records.from_json(records.to_json(live))
    assert back == live and back.launched_spec == spec and back.spec.memory_mib == 256


_CPU1 = Cpu("vcpu0-1-0", "qemu64-x86_64-cpu", (("core-id", 1),))
_DISK = devplug.PluggedDisk("hd0123456789ab", 3, Disk(path="/srv/d.img"))


def _devices(slots: dict[str, int], nodes: Collection[str] = (), attached: Collection[str] = (),
             netdevs: Collection[str] = ()) -> devplug.DeviceView:
    return devplug.DeviceView(slots, [], frozenset(nodes), frozenset(attached), frozenset(netdevs))


def _sizes(dimms: tuple[Dimm, ...] = (), cpus: tuple[Cpu, ...] = (),
           orphans: tuple[str, ...] = ()) -> hotplug.SizeView:
    return hotplug.SizeView(128, Plugged(dimms=dimms, cpus=cpus), 128, 1 + len(cpus), [], orphans)


@pytest.mark.parametrize(("recorded", "sizes", "devices", "left"), [
    (Plugged(), _sizes(), _devices({}), ()),  # agree: nothing to tell
    (Plugged(), None, None, ()),  # nothing could be plugged (no maxMemory/maxVcpus, q35)
    (Plugged(), None, _devices({}, nodes={"hd0123456789ab-format"}),  # killed after blockdev-add
     ("block node hd0123456789ab-format without its device",)),
    (Plugged(), None, _devices({}, netdevs={"nh525400000001-net"}),  # killed after netdev_add
     ("netdev nh525400000001-net without its device",)),
    (Plugged(), None, _devices({"hd0123456789ab": 3}, nodes={"hd0123456789ab-format"},
                               attached={"hd0123456789ab-format"}),  # killed before the record
     ("device /srv/d.img (hd0123456789ab) plugged, not in the record",)),
    (Plugged(disks=(_DISK,)), None, _devices({}),  # unplugged, the record not yet rewritten
     ("device /srv/d.img (hd0123456789ab) in the record, not plugged",)),
    (Plugged(disks=(_DISK,)), None, _devices({"hd0123456789ab": 3}, nodes={"hd0123456789ab-format"},
                                             attached={"hd0123456789ab-format"}), ()),
    (Plugged(), _sizes(orphans=("mem-dimm0",)), None, ("memory backend mem-dimm0 without its DIMM",)),
    (Plugged(), _sizes(dimms=(Dimm("dimm0", 256),), cpus=(_CPU1,)), None,
     ("DIMM dimm0 (256 MiB) plugged, not in the record", "vCPU vcpu0-1-0 plugged, not in the record")),
    (Plugged(dimms=(Dimm("dimm0", 256),), cpus=(_CPU1,)), _sizes(), None,
     ("DIMM dimm0 in the record, not plugged", "vCPU vcpu0-1-0 in the record, not plugged")),
], ids=["agree", "nothing-pluggable", "block-node", "netdev", "device-unrecorded", "device-gone",
        "disk-agrees", "backend", "dimm-and-cpu-unrecorded", "dimm-and-cpu-gone"])
def test_leftovers_of_a_live_change_killed_halfway(recorded: Plugged, sizes: hotplug.SizeView | None,
                                                    devices: devplug.DeviceView | None,
                                                    left: tuple[str, ...]) -> None:
    assert hotplug.leftovers(recorded, sizes, devices, {"hd0123456789ab": "/srv/d.img"}) == left
