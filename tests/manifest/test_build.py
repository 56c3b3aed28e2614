"""Golden tests of the builder: YAML in, exact model objects out (Defaults merged, everything normalized)."""

# ruff: noqa: E501  (golden values are kept one per line)
from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import model
from reconciler.manifest import assemble, load, parse_file
from reconciler.manifest.build import deep_merge, is_dotted_ipv4
from tests.manifest.helpers import NODE_A, write_tree

DEFAULTS = """\
apiVersion: reconciler/v1
kind: Defaults
metadata:
  name: defaults
spec:
  prune: true
  memory: 1G
  vcpus: 2
  machine: q35
  kernel:
    path: /boot/vmlinuz
    root: /dev/vda1
    cmdline: quiet
  migration:
    maxBandwidth: 1G
    maxDowntime: 500ms
  nics:
    - {mac: "52:54:00:ff:ff:ff", mode: user}
  qemuExtraArgs: [-device, virtio-rng-pci]
"""

FULL = """\
apiVersion: reconciler/v1
kind: Instance
metadata:
  name: web1
  labels: {tier: web, env: prod}
spec:
  node: node-a
  runStrategy: RerunOnFailure
  protect: true
  updatePolicy: Pending
  memory: 2G
  disks:
    - {path: /srv/web1.qcow2, format: qcow2, cache: writeback}
    - {path: /srv/data.img, bus: scsi, readOnly: true, cache: directsync}
  kernel:
    initrd: /boot/initrd.img
    cmdline: console=ttyS0
  acpi: false
  serialConsole: false
  vnc: {bind: 0.0.0.0, display: 7}
  nics:
    - {mac: "52:54:00:AB:CD:EF", model: e1000, mode: bridge, bridge: br0, ip: 192.0.2.10, hook: /usr/local/bin/ifup}
    - {mac: "52:54:00:00:00:02", model: rtl8139, mode: user}
  cpuModel: qemu64
  shutdownTimeout: 2m
  migration:
    mode: offline
    completionTimeoutPerGiB: 1m
    progressTimeout: 90s
    autoConverge: true
    postCopy: true
  qemuExtraArgs: []
"""

FULL_EXPECTED = model.InstanceSpec(
    name="web1",
    memory_mib=2048,
    vcpus=2,  # from Defaults
    node="node-a",
    labels=(("env", "prod"), ("tier", "web")),
    run_strategy=model.RunStrategy.RERUN_ON_FAILURE,
    protect=True,
    update_policy=model.UpdatePolicy.PENDING,
    disks=(
        # a kernel is given (merged from Defaults): no disk boots
        model.Disk(
            "/srv/web1.qcow2", model.DiskFormat.QCOW2, model.DiskBus.VIRTIO, False, model.CacheMode.WRITEBACK
        ),
        model.Disk(
            "/srv/data.img", model.DiskFormat.RAW, model.DiskBus.SCSI, True, model.CacheMode.DIRECTSYNC
        ),
    ),
    # mappings merge key by key: path and root from Defaults, initrd and cmdline from the instance
    kernel=model.KernelBoot(
        kernel="/boot/vmlinuz", root="/dev/vda1", initrd="/boot/initrd.img", cmdline="console=ttyS0"
    ),
    acpi=False,
    serial_console=False,
    vnc=model.Vnc(bind="0.0.0.0", display=7),
    nics=(  # lists replace the Defaults' list; MACs are lower-cased
        model.Nic(
            "52:54:00:ab:cd:ef",
            model.NicModel.E1000,
            model.NicMode.BRIDGE,
            "br0",
            "192.0.2.10",
            "/usr/local/bin/ifup",
        ),
        model.Nic("52:54:00:00:00:02", model.NicModel.RTL8139, model.NicMode.USER),
    ),
    machine="q35",
    cpu_model="qemu64",
    shutdown_timeout=120.0,
    migration=model.Migration(
        mode=model.MigrationMode.OFFLINE,
        max_bandwidth=1 << 30,
        max_downtime_ms=500,
        completion_timeout_per_gib=60.0,
        progress_timeout=90.0,
        auto_converge=True,
        post_copy=True,
    ),
    extra_args=(),  # an empty list replaces the Defaults' list too
)

MINIMAL = """\
apiVersion: reconciler/v1
kind: Instance
metadata:
  name: db1
spec:
  memory: 512
  disks:
    - {path: /srv/db1.img}
    - {path: /srv/db1-data.img}
"""

MINIMAL_EXPECTED = model.InstanceSpec(
    name="db1",
    memory_mib=512,
    disks=(model.Disk("/srv/db1.img", boot=True), model.Disk("/srv/db1-data.img")),  # the first disk boots
)


def _load(tmp_path: Path, files: dict[str, str]) -> model.DesiredState:
    write_tree(tmp_path, files)
    result = load([str(tmp_path)])
    assert [str(p) for p in result.problems] == []
    assert result.desired is not None
    return result.desired


def test_full_instance_with_defaults_merged(tmp_path: Path) -> None:
    desired = _load(tmp_path, {"nodes.yaml": NODE_A, "defaults.yaml": DEFAULTS, "web1.yaml": FULL})
    assert desired.instances["web1"] == FULL_EXPECTED
    assert desired.prune is True


def test_minimal_instance_gets_every_default(tmp_path: Path) -> None:
    desired = _load(tmp_path, {"db1.yaml": MINIMAL})
    assert desired.instances == {"db1": MINIMAL_EXPECTED}
    assert desired.nodes == {}
    assert desired.prune is False


def test_explicit_boot_disk(tmp_path: Path) -> None:
    text = MINIMAL.replace("{path: /srv/db1-data.img}", "{path: /srv/db1-data.img, boot: true}")
    desired = _load(tmp_path, {"db1.yaml": text})
    assert [d.boot for d in desired.instances["db1"].disks] == [False, True]


def test_node_spec_and_relative_state_dir(tmp_path: Path) -> None:
    node = (
        NODE_A.replace("/var/lib/reconciler/node-a", "../state/~node-a")
        + "  memory: 2G\n  qemuBinary: /opt/q\n"
    )
    desired = _load(tmp_path, {"deep/dir/nodes.yaml": node})
    assert desired.nodes["node-a"] == model.NodeSpec(
        name="node-a",
        state_dir=str(tmp_path / "deep/state/~node-a"),  # joined onto the file's directory; '~' kept
        address="127.0.0.1",
        accelerator=model.Accelerator.TCG,
        qemu_binary="/opt/q",
        migration_ports=model.PortRange(49152, 49183),
        memory_mib=2048,
    )


def test_sources_record_where_each_object_is_declared(tmp_path: Path) -> None:
    desired = _load(tmp_path, {"a.yaml": NODE_A + "---\n" + DEFAULTS, "b/web1.yaml": "# comment\n" + FULL})
    assert desired.sources == {
        "Node/node-a": model.SourceRef(str(tmp_path / "a.yaml"), 1, 1),
        "Defaults/defaults": model.SourceRef(str(tmp_path / "a.yaml"), 10, 1),
        "Instance/web1": model.SourceRef(str(tmp_path / "b/web1.yaml"), 2, 1),
    }


def test_per_file_parse_and_cross_file_assemble_are_separate() -> None:
    node = parse_file("nodes.yaml", NODE_A.encode())
    web = parse_file("web1.yaml", FULL.encode())
    defaults = parse_file("defaults.yaml", DEFAULTS.encode())
    assert node.problems == web.problems == defaults.problems == ()
    assert [(d.kind, d.name, d.valid) for d in web.documents] == [("Instance", "web1", True)]
    assert assemble([web]).problems[0].message == "node 'node-a' is not declared (nodes: none declared)"
    # a daemon keeps parsed files and re-assembles them with a changed one
    first = assemble([node, web, defaults])
    changed = parse_file("web1.yaml", FULL.replace("memory: 2G", "memory: 4G").encode())
    second = assemble([node, changed, defaults])
    assert first.desired is not None and second.desired is not None
    assert (first.desired.instances["web1"].memory_mib, second.desired.instances["web1"].memory_mib) == (
        2048,
        4096,
    )


@pytest.mark.parametrize(
    ("base", "override", "merged"),
    [
        ({"a": 1}, {"b": 2}, {"a": 1, "b": 2}),
        ({"a": {"x": 1, "y": 2}}, {"a": {"y": 3}}, {"a": {"x": 1, "y": 3}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": {"x": 1}}, {"a": 5}, {"a": 5}),
        ({"a": 5}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ],
)
def test_deep_merge(base: dict[str, object], override: dict[str, object], merged: dict[str, object]) -> None:
    assert deep_merge(base, override) == merged


@pytest.mark.parametrize("text", [
    "127.0.0.1", "0.0.0.0", "255.255.255.255", "198.18.0.1", "1.2.3.4", "256.1.1.1", "01.2.3.4", "1.2.3",
    "1.2.3.4.5", "1..3.4", "", "a.b.c.d", "1.2.3.4 ", " 1.2.3.4", "१.2.3.4", "1.2.3.0x1", "+1.2.3.4",
    "1.2.3.-4", "::1", "fe80::1%eth0", "0000.1.1.1", "00.1.1.1", "1.2.3.1000", "1_0.2.3.4", "².2.3.4",
])
def test_dotted_ipv4_agrees_with_ipaddress(text: str) -> None:
    # The builder's fast path for node addresses; anything it does not accept goes to ipaddress.
    import ipaddress

    try:
        expected = isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        expected = False
    assert is_dotted_ipv4(text) is expected
