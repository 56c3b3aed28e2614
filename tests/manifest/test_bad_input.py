"""Every kind of bad input gives exact one-line problems naming the file (table-driven).

Each case is one file, m/x.yaml, loaded as a tree with a valid m/nodes.yaml; the expected lines are what `reconciler validate`
prints. No case may raise.
"""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.manifest import Problem, read_file
from tests.manifest.helpers import NODE_A, instance, problem_lines, write_tree

CASES = [
    pytest.param(
        instance(extra="  vcpus: 2\n").replace("memory: 128M", "memory: 12X"),
        ["m/x.yaml:7:3: instance web1: spec.memory: '12X' is not a size like 512M or 2G"],
        id="memory_bad",
    ),
    pytest.param(
        instance().replace("memory: 128M", "memory: 0M"),
        ["m/x.yaml:7:3: instance web1: spec.memory: 0 MiB is out of range (16 MiB to 4194304 MiB)"],
        id="memory_zero",
    ),
    pytest.param(
        instance().replace("memory: 128M", "memory: 9T"),
        ["m/x.yaml:7:3: instance web1: spec.memory: 9437184 MiB is out of range (16 MiB to 4194304 MiB)"],
        id="memory_huge",
    ),
    pytest.param(
        instance(extra="  memroy: 1G\n"),
        ["m/x.yaml:11:3: instance web1: spec.memroy: unknown field; did you mean 'memory'?"],
        id="unknown_field",
    ),
    pytest.param(
        instance(extra="  foo: 1\n  bar: 2\n"),
        [
            "m/x.yaml:12:3: instance web1: spec.bar: unknown field (and 1 more); expected one of acpi, cloudInit, cpuModel, disks, firmware, guestAgent, kernel, machine, maxMemory, maxVcpus, memory, migration, nics, node, protect, qemuExtraArgs, runStrategy, secureBoot, serialConsole, shutdownTimeout, updatePolicy, vcpus, vnc"
        ],
        id="two_unknown",
    ),
    pytest.param(
        instance(extra="  runStrategy: Sometimes\n"),
        [
            "m/x.yaml:11:3: instance web1: spec.runStrategy: 'Sometimes' is not one of Always, RerunOnFailure, Once, Manual, Halted"
        ],
        id="bad_enum",
    ),
    pytest.param(
        instance(extra="  vcpus: two\n"),
        ["m/x.yaml:11:3: instance web1: spec.vcpus: 'two' is not an integer"],
        id="bad_type",
    ),
    pytest.param(
        instance(extra="  vcpus: 300\n"),
        ["m/x.yaml:11:3: instance web1: spec.vcpus: 300 is above the maximum of 255"],
        id="vcpus_range",
    ),
    pytest.param(
        instance(extra="  acpi: yes\n"),
        ["m/x.yaml:11:3: instance web1: spec.acpi: 'yes' is not true or false"],
        id="bool_yes",
    ),
    pytest.param(
        instance().replace("reconciler/v1", "reconciler/v2"),
        ["m/x.yaml:1:1: instance web1: apiVersion: 'reconciler/v2' is not reconciler/v1"],
        id="api",
    ),
    pytest.param(
        instance().replace("kind: Instance", "kind: Pod"),
        ["m/x.yaml:2:1: kind: 'Pod' is not one of Instance, Node, Defaults"],
        id="kind",
    ),
    pytest.param(
        instance(name="Web1"),
        [
            "m/x.yaml:4:3: instance Web1: metadata.name: 'Web1' is not valid here: a DNS label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ],
        id="name_upper",
    ),
    pytest.param(
        instance(name="a" * 64),
        ["m/x.yaml:4:3: instance: metadata.name: is longer than 63 characters"],
        id="name_long",
    ),
    pytest.param(
        instance(name='"web1\\n"'),
        # the schema's pattern now refuses it (ECMA's `$`), before build.check_name would
        ["m/x.yaml:4:3: instance: metadata.name: 'web1\\n' is not valid here: a DNS label (lower-case "
         "letters, digits and '-', starting and ending with a letter or digit)"],
        id="name_newline",
    ),
    pytest.param(
        instance().replace("  memory: 128M\n", ""),
        ["m/x.yaml:5:1: instance web1: spec.memory: required field is missing (here or in Defaults)"],
        id="no_memory",
    ),
    pytest.param(
        instance(extra="  memory: 1G\n"),
        ["m/x.yaml:11:3: instance web1: duplicate key 'memory' (first at line 7)"],
        id="dup_key",
    ),
    pytest.param(
        instance(extra="  memory: 1G\n  vcpus: 0\n  machine: !!binary aGVsbG8=\n"),
        [
            "m/x.yaml:11:3: instance web1: duplicate key 'memory' (first at line 7)",
            "m/x.yaml:12:3: instance web1: spec.vcpus: 0 is below the minimum of 1",
            "m/x.yaml:13:12: instance web1: tag !!binary is not allowed (plain data only)",
        ],
        id="yaml_and_schema_problems_together",
    ),
    pytest.param(
        instance(extra="  1: x\n"),
        ["m/x.yaml:11:3: instance web1: key 1 is not a string"],
        id="nonstr_key",
    ),
    pytest.param(
        instance(mac="52:54:00:00:00"),
        [
            "m/x.yaml:9:7: instance web1: spec.nics[0].mac: '52:54:00:00:00' is not a MAC address like 52:54:00:12:34:56"
        ],
        id="bad_mac",
    ),
    pytest.param(
        instance(mac="01:00:5e:00:00:01"),
        [
            "m/x.yaml:9:7: instance web1: spec.nics[0].mac: '01:00:5e:00:00:01' is a multicast address (the first octet must be even)"
        ],
        id="multicast_mac",
    ),
    pytest.param(
        instance().replace("mode: user", "mode: bridge"),
        ["m/x.yaml:9:7: instance web1: spec.nics[0].bridge: mode bridge needs a bridge"],
        id="bridge_missing",
    ),
    pytest.param(
        instance().replace("mode: user", "mode: user\n      bridge: br0"),
        ["m/x.yaml:11:7: instance web1: spec.nics[0].bridge: mode user cannot have a bridge"],
        id="user_with_bridge",
    ),
    pytest.param(
        instance().replace("mode: user", "mode: user\n      hook: /bin/true"),
        ["m/x.yaml:11:7: instance web1: spec.nics[0].hook: a hook is only used in mode bridge"],
        id="user_with_hook",
    ),
    pytest.param(
        instance(extra="  kernel: {path: vmlinuz, initrd: initrd.img, root: /dev/ram0}\n"),
        [
            "m/x.yaml:11:12: instance web1: spec.kernel.path: kernel path 'vmlinuz' must be an absolute path",
            "m/x.yaml:11:27: instance web1: spec.kernel.initrd: initrd path 'initrd.img' must be an absolute path",
        ],
        id="kernel_relative",
    ),
    pytest.param(
        instance(extra="  kernel: {path: /boot/vmlinuz}\n"),
        ["m/x.yaml:11:3: instance web1: spec.kernel.root: a root device is required with a kernel"],
        id="kernel_no_root",
    ),
    pytest.param(
        instance(extra="  disks:\n    - {path: /a.img, boot: true}\n    - {path: /b.img, boot: true}\n"),
        ["m/x.yaml:13:22: instance web1: spec.disks[1].boot: only one disk may boot (disks[0] already does)"],
        id="two_boot_disks",
    ),
    pytest.param(
        instance(extra="  disks:\n    - {path: a.img}\n"),
        ["m/x.yaml:12:8: instance web1: spec.disks[0].path: disk path 'a.img' must be an absolute path"],
        id="disk_relative",
    ),
    pytest.param(
        instance(extra="  vnc: {bind: localhost, display: 1}\n"),
        ["m/x.yaml:11:9: instance web1: spec.vnc.bind: 'localhost' is not a valid IP address"],
        id="vnc_bind",
    ),
    pytest.param(
        instance(extra="  shutdownTimeout: soon\n"),
        [
            "m/x.yaml:11:3: instance web1: spec.shutdownTimeout: 'soon' is not a duration like 30s, 2m or 300ms"
        ],
        id="duration_bad",
    ),
    pytest.param(
        instance(extra="  migration: {maxBandwidth: fast, maxDowntime: 0ms}\n"),
        [
            "m/x.yaml:11:15: instance web1: spec.migration.maxBandwidth: 'fast' is not a size like 512M or 2G",
            "m/x.yaml:11:35: instance web1: spec.migration.maxDowntime: 0ms is out of range (1ms to 3600000ms)",
        ],
        id="migration_bad",
    ),
    pytest.param(
        instance(extra="  qemuExtraArgs: [-device, '']\n"),
        ["m/x.yaml:11:28: instance web1: spec.qemuExtraArgs[1]: must not be empty"],
        id="extra_args",
    ),
    pytest.param(
        instance(extra="  machine: !!python/object:os.system pc\n"),
        ["m/x.yaml:11:12: instance web1: tag !!python/object:os.system is not allowed (plain data only)"],
        id="python_tag",
    ),
    pytest.param(
        instance(extra="  machine: !pc q35\n"),
        ["m/x.yaml:11:12: instance web1: tag !pc is not allowed (plain data only)"],
        id="custom_tag",
    ),
    pytest.param(
        instance(extra="  machine: !!binary aGVsbG8=\n"),
        ["m/x.yaml:11:12: instance web1: tag !!binary is not allowed (plain data only)"],
        id="binary_tag",
    ),
    pytest.param(
        instance(extra="  machine: 2024-01-01\n"),
        [],  # a plain string in YAML 1.2, not a date
        id="timestamp",
    ),
    pytest.param(
        instance().replace("  name: web1\n", "  name: web1\n  labels: {tier: 1, 'bad key!': x}\n"),
        [
            "m/x.yaml:5:3: instance web1: metadata.labels: 'bad key!' is not valid here: a label key (letters, digits, '-', '_', '.', '/')",
            "m/x.yaml:5:12: instance web1: metadata.labels.tier: 1 is not a string",
        ],
        id="labels",
    ),
    pytest.param(
        "- a\n- b\n",
        ["m/x.yaml:1:1: document is not a mapping (expected apiVersion, kind, metadata, spec)"],
        id="not_mapping",
    ),
    pytest.param(
        "hello\n",
        ["m/x.yaml:1:1: document is not a mapping (expected apiVersion, kind, metadata, spec)"],
        id="scalar_doc",
    ),
    pytest.param(
        instance() + "---\n",
        ["m/x.yaml:12:1: empty document"],
        id="empty_doc",
    ),
    pytest.param(
        "",
        ["m/x.yaml: no YAML documents in the file"],
        id="empty_file",
    ),
    pytest.param(
        "# nothing here\n",
        ["m/x.yaml: no YAML documents in the file"],
        id="comments_only",
    ),
    pytest.param(
        "apiVersion: [\n",
        ["m/x.yaml:2:1: invalid YAML: while parsing a flow node did not find expected node content"],
        id="syntax",
    ),
    pytest.param(
        "a:\n\tb: 1\n",
        ["m/x.yaml:2:1: invalid YAML: a tab character; YAML is indented with spaces only"],
        id="tab",
    ),
    pytest.param(
        b"\x00\x01\x02",
        ["m/x.yaml:1:1: binary file (contains a NUL byte), not YAML"],
        id="binary",
    ),
    pytest.param(
        "apiVersion: reconciler/v1\nkind: Instance # caf\xe9\n".encode("latin-1"),
        ["m/x.yaml:2:21: not UTF-8 text (byte 0xe9)"],
        id="latin1",
    ),
    pytest.param(
        b"\xef\xbb\xbfapiVersion: reconciler/v1\nkind: Instance # caf\xe9\n",
        ["m/x.yaml:2:21: not UTF-8 text (byte 0xe9)"],  # counted after the BOM, not 3 bytes short
        id="latin1_after_bom",
    ),
    pytest.param(
        b"\xef\xbb\xbfa: \x00\n",
        ["m/x.yaml:1:4: binary file (contains a NUL byte), not YAML"],
        id="binary_after_bom",
    ),
    pytest.param(
        "a: \x07\n",
        ["m/x.yaml:1:4: invalid YAML: character 7 is not allowed in YAML"],
        id="ctrl_char",
    ),
    pytest.param(
        "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        ["m/x.yaml:1:1: aliases expand to more than 100000 nodes"],
        id="laughs",
    ),
    pytest.param(
        "a: &a [*a]\n",
        ["m/x.yaml:1:1: recursive alias (an anchor used inside itself)"],
        id="recursive_alias",
    ),
    pytest.param(
        "a: " + "[" * 6000 + "]" * 6000 + "\n",
        ["m/x.yaml:1:103: invalid YAML: nesting deeper than 100 levels"],
        id="deep_flow",
    ),
    pytest.param(
        instance(extra="  vcpus: " + "9" * 40 + "\n"),
        ["m/x.yaml:11:10: instance web1: number 99999999999999999999... is longer than 30 characters"],
        id="big_number",
    ),
    pytest.param(
        instance(extra="  shutdownTimeout: .inf\n"),
        ["m/x.yaml:11:3: instance web1: spec.shutdownTimeout: inf is not a duration like 30s, 2m or 300ms"],
        id="inf",
    ),
]


@pytest.mark.parametrize(("content", "expected"), CASES)
def test_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | bytes, expected: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/x.yaml": content, "m/nodes.yaml": NODE_A})
    assert problem_lines(["m"]) == expected


def test_fifo_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    os.mkfifo(tmp_path / "m/x.yaml")  # opening it for reading would block forever
    assert problem_lines(["m"]) == ["m/x.yaml: not a regular file"]


def test_unreadable_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/x.yaml": instance()})
    assert read_file("m/x.yaml/y.yaml") == (
        None,
        Problem("m/x.yaml/y.yaml", message="cannot read: Not a directory"),
    )
    assert problem_lines(["m/x.yaml/y.yaml"]) == ["m/x.yaml/y.yaml: cannot read: Not a directory"]


def test_a_directory_named_like_yaml_is_walked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/dir.yaml/x.yaml": "a: 1\n"})
    assert problem_lines(["m"])[0].startswith("m/dir.yaml/x.yaml:1:1: ")


def test_file_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/x.yaml": "# " + "x" * (16 * 1024 * 1024) + "\n"})
    assert problem_lines(["m"]) == ["m/x.yaml: file is larger than 16 MiB"]


def test_all_problems_of_all_documents_in_one_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad1 = instance("web1").replace("memory: 128M", "memory: 12X")
    bad2 = instance("web2", mac="52:54:00:00:00:02", extra="  vcpus: 0\n")
    write_tree(tmp_path, {"m/a.yaml": bad1 + "---\n" + bad2, "m/b.yaml": "[1, 2]\n", "m/n.yaml": NODE_A})
    assert problem_lines(["m"]) == [
        "m/a.yaml:7:3: instance web1: spec.memory: '12X' is not a size like 512M or 2G",
        "m/a.yaml:22:3: instance web2: spec.vcpus: 0 is below the minimum of 1",
        "m/b.yaml:1:1: document is not a mapping (expected apiVersion, kind, metadata, spec)",
    ]
