"""Documents that fail the schema are still checked by the semantic rules, without spurious problems.

Each case is a tree under m/ (with a valid m/a.yaml declaring node-a unless the case replaces it).
"""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifest import salvage
from tests.manifest.helpers import NODE_A, instance, problem_lines, write_tree

DEFAULTS = "apiVersion: reconciler/v1\nkind: Defaults\nmetadata:\n  name: defaults\nspec:\n"

CASES = [
    pytest.param(
        {"b.yaml": instance().replace("memory: 128M", "memory: true")},
        ["m/b.yaml:7:3: instance web1: spec.memory: True is not a size like 512M or 2G"],
        id="type_error_no_spurious_required",
    ),
    pytest.param(
        {"b.yaml": instance(extra="  disks: [{format: raw}]\n  vnc: {bind: nowhere}\n")},
        [
            "m/b.yaml:11:11: instance web1: spec.disks[0].path: required field is missing",
            "m/b.yaml:12:9: instance web1: spec.vnc.bind: 'nowhere' is not a valid IP address",
        ],
        id="missing_disk_path_and_bad_vnc",
    ),
    pytest.param(
        {
            "d.yaml": DEFAULTS + "  memory: 256M\n  vcpus: 0\n",
            "b.yaml": instance().replace("  memory: 128M\n", ""),
        },
        ["m/d.yaml:7:3: defaults defaults: spec.vcpus: 0 is below the minimum of 1"],
        id="bad_defaults_still_merged",
    ),
    pytest.param(
        {"b.yaml": instance(name="Web_1", extra="  vnc: {bind: nowhere}\n")},
        [
            "m/b.yaml:4:3: instance Web_1: metadata.name: 'Web_1' is not valid here: a DNS label (lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ],
        id="bad_name_not_built",
    ),
    pytest.param(
        {"b.yaml": instance("web1", extra="  colour: blue\n") + "---\n" + instance("web2")},
        [
            "m/b.yaml:11:3: instance web1: spec.colour: unknown field; expected one of acpi, cloudInit, cpuModel, disks, firmware, guestAgent, kernel, machine, maxMemory, maxVcpus, memory, migration, nics, node, protect, qemuExtraArgs, runStrategy, secureBoot, serialConsole, shutdownTimeout, updatePolicy, vcpus, vnc",
            "m/b.yaml:21:7: instance web2: spec.nics[0].mac: MAC address '52:54:00:00:00:01' is also used by instance web1 (m/b.yaml:1:1)",
        ],
        id="unknown_field_and_duplicate_mac",
    ),
    pytest.param(
        {"a.yaml": NODE_A.replace("  stateDir: /var/lib/reconciler/node-a\n", "  address: nowhere\n")},
        ["m/a.yaml:5:1: node node-a: spec.stateDir: required field is missing"],
        id="node_missing_state_dir",
    ),
]


@pytest.mark.parametrize(("files", "expected"), CASES)
def test_salvage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str], expected: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {f"m/{name}": text for name, text in {"a.yaml": NODE_A, **files}.items()})
    assert problem_lines(["m"]) == expected


@pytest.mark.parametrize(
    ("errors", "missing", "cuts"),
    [
        ([("spec", "memory")], [], (("spec", "memory"),)),
        ([("spec", "disks", 0, "format")], [], (("spec", "disks"),)),  # whole list: indices stay stable
        ([], [("spec", "migrationPorts", "first")], (("spec", "migrationPorts"),)),  # missing: cut the parent
        ([("metadata", "labels", "x")], [], (("metadata", "labels", "x"),)),
        ([], [("spec", "stateDir")], None),  # the spec itself would be cut
        ([("metadata", "name")], [], None),
        ([("apiVersion",)], [], None),
    ],
)
def test_cut_points(errors: list[salvage.FieldPath], missing: list[salvage.FieldPath], cuts: object) -> None:
    assert salvage.cut_points(errors, missing) == cuts


def test_without_leaves_the_original_alone() -> None:
    body = {"spec": {"memory": "x", "vcpus": 1, "migration": {"mode": "y"}}}
    assert salvage.without(body, [("spec", "memory"), ("spec", "migration", "mode")]) == {
        "spec": {"vcpus": 1, "migration": {}}
    }
    assert body == {"spec": {"memory": "x", "vcpus": 1, "migration": {"mode": "y"}}}
