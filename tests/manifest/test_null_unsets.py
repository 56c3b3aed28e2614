"""`field: null` in an instance removes what the Defaults document sets (issue 11): the built-in default
applies again. Inside kernel, vnc and migration (mappings merge key by key) each key can be unset too.
Exact model objects, through the real loader and through the watch daemon's incremental assembly.
"""

# ruff: noqa: E501  (table rows are kept one per line)
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from reconciler import manifest, model
from reconciler.manifest.build import deep_merge
from reconciler.watch.assembly import Assembly
from tests.manifest.helpers import NODE_A, write_tree

DEFAULTS = """\
apiVersion: reconciler/v1
kind: Defaults
metadata:
  name: defaults
spec:
  node: node-a
  runStrategy: Halted
  protect: true
  updatePolicy: Pending
  memory: 256M
  vcpus: 2
  disks: [{path: /srv/shared-base.img, readOnly: true}]
  kernel: {path: /boot/vmlinuz, root: /dev/vda1, initrd: /boot/initrd.img, cmdline: quiet}
  acpi: false
  serialConsole: false
  vnc: {bind: 0.0.0.0, display: 3}
  nics: [{mac: "52:54:00:ff:ff:01", mode: user}]
  machine: q35
  cpuModel: qemu64
  shutdownTimeout: 2m
  migration: {mode: offline, maxBandwidth: 1G, maxDowntime: 500ms, autoConverge: true}
  qemuExtraArgs: [-device, virtio-rng-pci]
"""

INHERITED = model.InstanceSpec(
    name="web1", memory_mib=256, vcpus=2, node="node-a", run_strategy=model.RunStrategy.HALTED, protect=True,
    update_policy=model.UpdatePolicy.PENDING, disks=(model.Disk("/srv/shared-base.img", read_only=True),),
    kernel=model.KernelBoot(kernel="/boot/vmlinuz", root="/dev/vda1", initrd="/boot/initrd.img", cmdline="quiet"),
    acpi=False, serial_console=False, vnc=model.Vnc(bind="0.0.0.0", display=3),
    nics=(model.Nic("52:54:00:ff:ff:01", mode=model.NicMode.USER),), machine="q35", cpu_model="qemu64",
    shutdown_timeout=120.0,
    migration=model.Migration(mode=model.MigrationMode.OFFLINE, max_bandwidth=1 << 30, max_downtime_ms=500,
                              auto_converge=True),
    extra_args=("-device", "virtio-rng-pci"),
)
BUILT_IN = model.InstanceSpec(name="", memory_mib=1)


def _instance(spec_lines: str) -> str:
    return f"apiVersion: reconciler/v1\nkind: Instance\nmetadata:\n  name: web1\nspec:\n{spec_lines}"


CASES = [
    ("nothing", "  memory: 256M\n", INHERITED),
    ("node", "  node: null\n", replace(INHERITED, node=None)),
    ("runStrategy", "  runStrategy: null\n", replace(INHERITED, run_strategy=BUILT_IN.run_strategy)),
    ("protect", "  protect: null\n", replace(INHERITED, protect=False)),
    ("updatePolicy", "  updatePolicy: ~\n", replace(INHERITED, update_policy=model.UpdatePolicy.IMMEDIATE)),
    ("vcpus", "  vcpus: null\n", replace(INHERITED, vcpus=1)),
    # no disk boots while Defaults gives a kernel; with the kernel unset, the first disk boots
    ("disks", "  disks: null\n", replace(INHERITED, disks=())),
    ("kernel", "  kernel: null\n", replace(INHERITED, kernel=None, disks=(model.Disk("/srv/shared-base.img", read_only=True, boot=True),))),
    ("kernel.initrd", "  kernel: {initrd: null}\n", replace(INHERITED, kernel=model.KernelBoot("/boot/vmlinuz", "/dev/vda1", cmdline="quiet"))),
    ("kernel.cmdline", "  kernel: {cmdline: null, root: /dev/vdb}\n", replace(INHERITED, kernel=model.KernelBoot("/boot/vmlinuz", "/dev/vdb", "/boot/initrd.img"))),
    ("acpi", "  acpi: null\n", replace(INHERITED, acpi=True)),
    ("serialConsole", "  serialConsole: null\n", replace(INHERITED, serial_console=True)),
    ("vnc", "  vnc: null\n", replace(INHERITED, vnc=None)),
    ("vnc.bind", "  vnc: {bind: null}\n", replace(INHERITED, vnc=model.Vnc(bind="127.0.0.1", display=3))),
    ("vnc.display", "  vnc: {display: null}\n", replace(INHERITED, vnc=model.Vnc(bind="0.0.0.0", display=0))),
    ("nics", "  nics: null\n", replace(INHERITED, nics=())),
    ("machine", "  machine: null\n", replace(INHERITED, machine="pc")),
    ("cpuModel", "  cpuModel: null\n", replace(INHERITED, cpu_model=None)),
    ("shutdownTimeout", "  shutdownTimeout: null\n", replace(INHERITED, shutdown_timeout=BUILT_IN.shutdown_timeout)),
    ("migration", "  migration: null\n", replace(INHERITED, migration=model.Migration())),
    ("migration.keys", "  migration: {maxBandwidth: null, mode: null, maxDowntime: 1s}\n",
     replace(INHERITED, migration=model.Migration(max_downtime_ms=1000, auto_converge=True))),
    ("qemuExtraArgs", "  qemuExtraArgs: null\n", replace(INHERITED, extra_args=())),
    ("several", "  kernel: null\n  disks: null\n  vnc: null\n  cpuModel: null\n",
     replace(INHERITED, kernel=None, disks=(), vnc=None, cpu_model=None)),
]


def _tree(tmp_path: Path, instance: str, defaults: str = DEFAULTS) -> list[manifest.ParsedFile]:
    files = {"node.yaml": NODE_A, "web1.yaml": instance}
    if defaults:
        files["defaults.yaml"] = defaults
    write_tree(tmp_path, files)
    return manifest.parse_paths(sorted(str(p) for p in tmp_path.iterdir()))


def _incremental(parsed: list[manifest.ParsedFile]) -> model.DesiredState | None:
    assembly = Assembly()
    assembly.update({f.path: f for f in parsed})
    return assembly.desired()


@pytest.mark.parametrize(("field", "spec_lines", "expected"), CASES, ids=[c[0] for c in CASES])
def test_null_removes_the_inherited_value(tmp_path: Path, field: str, spec_lines: str,
                                          expected: model.InstanceSpec) -> None:
    parsed = _tree(tmp_path, _instance(spec_lines))
    result = manifest.assemble(parsed)
    assert [str(p) for p in result.problems] == []
    assert result.desired is not None
    assert result.desired.instances["web1"] == expected
    incremental = _incremental(parsed)
    assert incremental is not None and incremental.instances["web1"] == expected


@pytest.mark.parametrize(
    ("spec_lines", "expected"),
    [
        ("  memory: 128M\n  kernel: null\n  vnc: {bind: null, display: 2}\n  cpuModel: null\n  migration: {maxDowntime: null}\n",
         model.InstanceSpec(name="web1", memory_mib=128, vnc=model.Vnc(display=2))),
        ("  memory: 128M\n  kernel: {path: /boot/vmlinuz, root: /dev/vda1, initrd: null}\n  disks: null\n",
         model.InstanceSpec(name="web1", memory_mib=128, kernel=model.KernelBoot("/boot/vmlinuz", "/dev/vda1"))),
    ],
)
def test_null_without_defaults_is_the_built_in_default(tmp_path: Path, spec_lines: str,
                                                       expected: model.InstanceSpec) -> None:
    parsed = _tree(tmp_path, _instance(spec_lines), defaults="")
    result = manifest.assemble(parsed)
    assert [str(p) for p in result.problems] == []
    assert result.desired is not None and result.desired.instances["web1"] == expected
    incremental = _incremental(parsed)
    assert incremental is not None and incremental.instances["web1"] == expected


def test_null_in_defaults_sets_nothing(tmp_path: Path) -> None:
    defaults = DEFAULTS.replace("  cpuModel: qemu64\n", "  cpuModel: null\n").replace(
        "  vnc: {bind: 0.0.0.0, display: 3}\n", "  vnc: {bind: null, display: 3}\n")
    parsed = _tree(tmp_path, _instance("  memory: 256M\n"), defaults)
    result = manifest.assemble(parsed)
    expected = replace(INHERITED, cpu_model=None, vnc=model.Vnc(display=3))
    assert result.desired is not None and result.desired.instances["web1"] == expected
    incremental = _incremental(parsed)
    assert incremental is not None and incremental.instances["web1"] == expected


@pytest.mark.parametrize(
    ("spec_lines", "problem"),
    [
        # memory is required: it cannot be unset
        ("  memory: null\n", "web1.yaml:6:3: instance web1: spec.memory: null is not a size like 512M or 2G"),
        # a null inside a list item is not a removal (lists are replaced, never merged)
        ('  nics: [{mac: "52:54:00:00:00:09", mode: null}]\n',
         "web1.yaml:6:37: instance web1: spec.nics[0].mode: null is not one of bridge, user"),
        # unsetting a kernel's path leaves a kernel without one
        ("  kernel: {path: null}\n", "web1.yaml:6:12: instance web1: spec.kernel.path: a kernel needs a path"),
    ],
)
def test_what_null_cannot_do(tmp_path: Path, spec_lines: str, problem: str) -> None:
    result = manifest.assemble(_tree(tmp_path, _instance(spec_lines)))
    assert [str(p).removeprefix(f"{tmp_path}/") for p in result.problems] == [problem]


@pytest.mark.parametrize(
    ("base", "override", "merged"),
    [
        ({"a": 1, "b": 2}, {"a": None}, {"b": 2}),
        ({"k": {"x": 1, "y": 2}}, {"k": {"x": None}}, {"k": {"y": 2}}),
        ({}, {"k": {"x": None, "y": 1}}, {"k": {"y": 1}}),  # nothing to remove: still no null left
        ({"k": {"x": 1}}, {"k": None}, {}),
        ({}, {"a": None}, {}),
        ({"l": [1]}, {"l": [{"x": None}]}, {"l": [{"x": None}]}),  # lists are data, never merged
    ],
)
def test_deep_merge_null_removes(base: dict[str, object], override: dict[str, object],
                                 merged: dict[str, object]) -> None:
    assert deep_merge(base, override) == merged
