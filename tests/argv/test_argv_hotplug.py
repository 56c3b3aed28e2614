"""Golden tests of the boot argv for live changes: room for DIMMs and CPUs, the balloon, and the devices a
migration target is started with (hotplugged into its source). Exact argv, table-driven; the rest of the
argv is pinned by test_argv_golden."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from reconciler.argv import build_launch
from reconciler.errors import ArgvError
from reconciler.hotplug import Cpu, Dimm, Plugged
from reconciler.model import Accelerator, InstanceSpec, NodeSpec

NODE = NodeSpec(name="n1", state_dir="/srv/rc/n1", accelerator=Accelerator.TCG)
SPEC = InstanceSpec(name="vm1", memory_mib=256)
BALLOON = ("-device", "virtio-balloon-pci,id=balloon0")
CPU = Cpu("vcpu0-1-0", "qemu64-x86_64-cpu", (("socket-id", 0), ("core-id", 1), ("thread-id", 0)))


def spec(**kw: Any) -> InstanceSpec:
    return dataclasses.replace(SPEC, **kw)


def sizes(argv: tuple[str, ...]) -> tuple[str, ...]:
    i = argv.index("-m")
    return argv[i:i + 4]


def after_nics(argv: tuple[str, ...]) -> tuple[str, ...]:
    return argv[argv.index("-nic") + 2:]


CASES: list[tuple[str, InstanceSpec, Plugged, tuple[str, ...], tuple[str, ...]]] = [
    ("no room: as before", SPEC, Plugged(), ("-m", "256", "-smp", "1"), ()),
    ("maxMemory equal: the balloon only", spec(max_memory_mib=256), Plugged(), ("-m", "256", "-smp", "1"),
     BALLOON),
    ("maxMemory above: slots", spec(max_memory_mib=1024), Plugged(),
     ("-m", "256M,slots=8,maxmem=1024M", "-smp", "1"), BALLOON),
    ("maxVcpus above", spec(vcpus=2, max_vcpus=4), Plugged(), ("-m", "256", "-smp", "2,maxcpus=4"), ()),
    ("maxVcpus equal: nothing", spec(vcpus=2, max_vcpus=2), Plugged(), ("-m", "256", "-smp", "2"), ()),
    ("a migration target: the plugged devices", spec(max_memory_mib=1024, max_vcpus=2),
     Plugged((Dimm("dimm0", 128), Dimm("dimm1", 256)), (CPU,)),
     ("-m", "256M,slots=8,maxmem=1024M", "-smp", "1,maxcpus=2"),
     (*BALLOON,
      "-object", "memory-backend-ram,id=mem-dimm0,size=128M", "-device", "pc-dimm,id=dimm0,memdev=mem-dimm0",
      "-object", "memory-backend-ram,id=mem-dimm1,size=256M", "-device", "pc-dimm,id=dimm1,memdev=mem-dimm1",
      "-device", "qemu64-x86_64-cpu,id=vcpu0-1-0,socket-id=0,core-id=1,thread-id=0")),
]


@pytest.mark.parametrize(("spec_", "plugged", "want_sizes", "want_devices"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_hotplug_argv(spec_: InstanceSpec, plugged: Plugged, want_sizes: tuple[str, ...],
                      want_devices: tuple[str, ...]) -> None:
    argv = build_launch(spec_, NODE, plugged=plugged).argv
    assert sizes(argv) == want_sizes
    assert after_nics(argv) == want_devices


@pytest.mark.parametrize(("spec_", "field", "needle"), [
    (spec(max_memory_mib=128), "memory", "above maxMemory (128 MiB)"),
    (spec(vcpus=3, max_vcpus=2), "vcpus", "above maxVcpus (2)"),
])
def test_above_the_maximum_is_refused(spec_: InstanceSpec, field: str, needle: str) -> None:
    with pytest.raises(ArgvError) as info:
        build_launch(spec_, NODE)
    assert info.value.field == field and needle in info.value.detail


def test_a_cpu_driver_from_qemu_is_still_checked() -> None:
    bad = Plugged(cpus=(dataclasses.replace(CPU, driver="qemu64,x=y"),))
    with pytest.raises(ArgvError) as info:
        build_launch(spec(max_vcpus=2), NODE, plugged=bad)
    assert info.value.field == "cpu"
