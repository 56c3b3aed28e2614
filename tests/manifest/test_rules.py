"""Rules across documents and files (unique names, references, shared resources), table-driven.

Each case is a tree of files under m/; the expected lines are exactly what `reconciler validate` prints.
"""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

from pathlib import Path

import pytest

from tests.manifest.helpers import NODE_A, NODE_B, instance, problem_lines, write_tree

DEFAULTS = "apiVersion: reconciler/v1\nkind: Defaults\nmetadata:\n  name: defaults\nspec:\n  prune: true\n"

CASES = [
    pytest.param(
        {"a.yaml": NODE_A, "b.yaml": instance()},
        [],
        id="valid",
    ),
    pytest.param(
        {"a.yaml": NODE_A + "---\n" + instance(), "b.yaml": instance(mac="52:54:00:00:00:02")},
        [
            "m/b.yaml:4:3: instance web1: metadata.name: Instance 'web1' is declared twice: here and at m/a.yaml:10:1"
        ],
        id="dup_instance",
    ),
    pytest.param(
        {"a.yaml": NODE_A, "b.yaml": NODE_A.replace("node-a\nspec", "node-a\nspec")},
        [
            "m/b.yaml:4:3: node node-a: metadata.name: Node 'node-a' is declared twice: here and at m/a.yaml:1:1"
        ],
        id="dup_node",
    ),
    pytest.param(
        {"a.yaml": NODE_A + "---\n" + instance(name="node-a")},
        [],
        id="same_name_other_kind",
    ),
    pytest.param(
        {"a.yaml": NODE_A, "b.yaml": instance(node="node-z")},
        ["m/b.yaml:6:3: instance web1: spec.node: node 'node-z' is not declared (nodes: node-a)"],
        id="unknown_node",
    ),
    pytest.param(
        {"a.yaml": NODE_A, "b.yaml": instance("web1") + "---\n" + instance("web2", mac="52:54:00:00:00:01")},
        [
            "m/b.yaml:20:7: instance web2: spec.nics[0].mac: MAC address '52:54:00:00:00:01' is also used by instance web1 (m/b.yaml:1:1)"
        ],
        id="dup_mac",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A,
            "b.yaml": instance("web1", mac="52:54:00:AA:00:01")
            + "---\n"
            + instance("web2", mac="52:54:00:aa:00:01"),
        },
        [
            "m/b.yaml:20:7: instance web2: spec.nics[0].mac: MAC address '52:54:00:aa:00:01' is also used by instance web1 (m/b.yaml:1:1)"
        ],
        id="dup_mac_case",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A,
            "b.yaml": instance("web1", extra="  disks: [{path: /srv/a.img}]\n")
            + "---\n"
            + instance("web2", mac="52:54:00:00:00:02", extra="  disks: [{path: /srv/a.img}]\n"),
        },
        [
            "m/b.yaml:23:12: instance web2: spec.disks[0].path: disk path '/srv/a.img' is also used by instance web1 (m/b.yaml:1:1)"
        ],
        id="dup_disk",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A,
            "b.yaml": instance("web1", extra="  disks: [{path: /srv/a.img}, {path: /srv/a.img}]\n"),
        },
        [
            "m/b.yaml:11:32: instance web1: spec.disks[1].path: disk path '/srv/a.img' is used twice here (also spec.disks[0].path)"
        ],
        id="dup_disk_same_instance",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A + "---\n" + NODE_B,
            "b.yaml": instance("web1", extra="  vnc: {display: 1}\n")
            + "---\n"
            + instance("web2", mac="52:54:00:00:00:02", extra="  vnc: {display: 1}\n")
            + "---\n"
            + instance("web3", node="node-b", mac="52:54:00:00:00:03", extra="  vnc: {display: 1}\n"),
        },
        [
            "m/b.yaml:23:9: instance web2: spec.vnc.display: VNC display 1 (port 5901 on 127.0.0.1) is also used by instance web1 (m/b.yaml:1:1)",
            "m/b.yaml:35:9: instance web3: spec.vnc.display: VNC display 1 (port 5901 on 127.0.0.1) is also used by instance web1 on node node-a, which has the same address (m/b.yaml:1:1)",
        ],
        id="vnc_display",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A + "---\n" + NODE_B.replace("  accelerator", "  address: 127.0.0.2\n  accelerator"),
            "b.yaml": instance("web1", extra="  vnc: {display: 1}\n")
            + "---\n"
            + instance("web3", node="node-b", mac="52:54:00:00:00:03", extra="  vnc: {display: 1}\n"),
        },
        [],
        id="vnc_display_other_address",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A,
            "b.yaml": instance("web1", extra="  vnc: {bind: 127.0.0.1, display: 1}\n")
            + "---\n"
            + instance("web2", mac="52:54:00:00:00:02", extra="  vnc: {bind: 127.0.0.2, display: 1}\n")
            + "---\n"
            + instance("web3", mac="52:54:00:00:00:03", extra="  vnc: {bind: '::', display: 1, passwordFile: /etc/pw}\n"),
        },
        [
            "m/b.yaml:35:21: instance web3: spec.vnc.display: VNC display 1 (port 5901 on 127.0.0.1) is also used by instance web1 (m/b.yaml:1:1)"
        ],
        id="vnc_display_binds",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A + "---\n" + NODE_B.replace("{first: 49184, last: 49215}", "{first: 5900, last: 5909}"),
            "b.yaml": instance("web1", extra="  vnc: {display: 3}\n"),
        },
        [
            "m/b.yaml:11:9: instance web1: spec.vnc.display: VNC display 3 (port 5903 on 127.0.0.1) is in node node-b's migration ports 5900-5909"
        ],
        id="vnc_display_in_migration_ports",
    ),
    pytest.param(
        {"a.yaml": NODE_A + "---\n" + DEFAULTS, "b.yaml": DEFAULTS.replace("name: defaults", "name: other")},
        [
            "m/b.yaml:2:1: defaults other: kind: only one Defaults document is allowed; the first is at m/a.yaml:10:1"
        ],
        id="two_defaults",
    ),
    pytest.param(
        {"a.yaml": NODE_A, "b.yaml": instance(extra="  cpuModel: host\n")},
        ["m/b.yaml:11:3: instance web1: spec.cpuModel: cpuModel host needs a kvm node; node-a uses tcg"],
        id="host_cpu_tcg",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A
            + "---\n"
            + NODE_B.replace("node-b\n  accelerator", "node-a\n  accelerator").replace(
                "/var/lib/reconciler/node-b", "/var/lib/reconciler/node-a"
            )
        },
        [
            "m/a.yaml:15:3: node node-b: spec.stateDir: stateDir '/var/lib/reconciler/node-a' is also used by node node-a (m/a.yaml:1:1)"
        ],
        id="state_dir_shared",
    ),
    pytest.param(
        {"a.yaml": NODE_A + "---\n" + NODE_B.replace("first: 49184", "first: 49180")},
        [
            "m/a.yaml:17:3: node node-b: spec.migrationPorts: ports 49180-49215 overlap node node-a's 49152-49183 on 127.0.0.1 (m/a.yaml:1:1)"
        ],
        id="ports_overlap",
    ),
    pytest.param(
        {"a.yaml": NODE_A.replace("{first: 49152, last: 49183}", "{first: 49200, last: 49183}")},
        ["m/a.yaml:8:34: node node-a: spec.migrationPorts.last: last (49183) is below first (49200)"],
        id="ports_reversed",
    ),
    pytest.param(
        {"a.yaml": NODE_A.replace("  accelerator", "  address: node-a.example\n  accelerator")},
        ["m/a.yaml:7:3: node node-a: spec.address: 'node-a.example' is not a valid IP address"],
        id="node_address",
    ),
    pytest.param(
        {"a.yaml": NODE_A + "---\n" + DEFAULTS + "  kernel: {path: /boot/vmlinuz}\n", "b.yaml": instance()},
        ["m/b.yaml:5:1: instance web1: spec.kernel.root: a root device is required with a kernel"],
        id="kernel_from_defaults_no_root",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A + "---\n" + DEFAULTS + "  memory: 256M\n",
            "b.yaml": instance().replace("  memory: 128M\n", ""),
        },
        [],
        id="memory_from_defaults",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A,
            "b.yaml": instance(
                extra="  kernel: {path: /boot/vmlinuz, root: /dev/vda}\n  disks: [{path: /a.img, boot: true}]\n"
            ),
        },
        [
            "m/b.yaml:12:26: instance web1: spec.disks[0].boot: a disk cannot boot when a kernel is given (direct kernel boot)"
        ],
        id="kernel_boot_disk",
    ),
    pytest.param(
        {
            "a.yaml": NODE_A,
            "b.yaml": instance(
                extra="  disks:\n" + "".join(f"    - {{path: /d{i}.img, bus: ide}}\n" for i in range(5))
            ),
        },
        ["m/b.yaml:16:23: instance web1: spec.disks[4].bus: at most 4 disks can use the ide bus"],
        id="ide_disks",
    ),
]


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], expected: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {f"m/{name}": text for name, text in files.items()})
    assert problem_lines(["m"]) == expected
