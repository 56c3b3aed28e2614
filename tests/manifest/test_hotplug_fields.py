"""maxMemory and maxVcpus in manifests: parsed into the model (None when not given: the boot values),
and a memory or vcpus above its maximum refused at the field, with file:line (table-driven)."""

# ruff: noqa: E501  (expected output lines are kept whole, as users see them)
from __future__ import annotations

from pathlib import Path

import pytest

from reconciler import manifest
from tests.manifest.helpers import NODE_A, instance, problem_lines, write_tree

BAD = [
    pytest.param("  maxMemory: 64M\n", ["m/x.yaml:7:3: instance web1: spec.memory: 128 MiB is above maxMemory (64 MiB)"],
                 id="memory_above_max"),
    pytest.param("  vcpus: 4\n  maxVcpus: 2\n", ["m/x.yaml:11:3: instance web1: spec.vcpus: 4 is above maxVcpus (2)"],
                 id="vcpus_above_max"),
    pytest.param("  maxMemory: 1X\n", ["m/x.yaml:11:3: instance web1: spec.maxMemory: '1X' is not a size like 512M or 2G"],
                 id="max_memory_not_a_size"),
    pytest.param("  maxMemory: 9T\n", ["m/x.yaml:11:3: instance web1: spec.maxMemory: 9437184 MiB is out of range (16 MiB to 4194304 MiB)"],
                 id="max_memory_huge"),
    pytest.param("  maxVcpus: 0\n", ["m/x.yaml:11:3: instance web1: spec.maxVcpus: 0 is below the minimum of 1"],
                 id="max_vcpus_zero"),
]


@pytest.mark.parametrize(("extra", "expected"), BAD)
def test_bad(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, expected: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    write_tree(tmp_path, {"m/x.yaml": instance(extra=extra), "m/nodes.yaml": NODE_A})
    assert problem_lines(["m"]) == expected


@pytest.mark.parametrize(("extra", "max_memory", "max_vcpus"), [
    ("", None, None),
    ("  maxMemory: 1G\n  vcpus: 2\n  maxVcpus: 8\n", 1024, 8),
    ("  maxMemory: 128M\n", 128, None),
    ("  maxMemory: null\n  maxVcpus: null\n", None, None),
])
def test_parsed(tmp_path: Path, extra: str, max_memory: int | None, max_vcpus: int | None) -> None:
    write_tree(tmp_path, {"m/x.yaml": instance(extra=extra), "m/nodes.yaml": NODE_A})
    desired = manifest.load([str(tmp_path / "m")]).desired
    assert desired is not None
    web1 = desired.instances["web1"]
    assert (web1.max_memory_mib, web1.max_vcpus) == (max_memory, max_vcpus)


def test_defaults_give_every_instance_room(tmp_path: Path) -> None:
    defaults = "apiVersion: reconciler/v1\nkind: Defaults\nmetadata:\n  name: defaults\nspec:\n  maxMemory: 2G\n"
    write_tree(tmp_path, {"m/x.yaml": instance(), "m/d.yaml": defaults, "m/nodes.yaml": NODE_A})
    desired = manifest.load([str(tmp_path / "m")]).desired
    assert desired is not None and desired.instances["web1"].max_memory_mib == 2048
