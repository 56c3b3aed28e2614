"""The pure parts of the test guest's build (tests/guest/build.py) and its report parser (conftest).

Why: the guest's module load order, package closure and library set are computed, not listed; a wrong
computation shows up only as a guest that cannot see a disk or run its agent, far from the cause.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import GuestReport, _load_build_module

build = _load_build_module()


@pytest.mark.parametrize(
    ("roots", "loaded", "expected"),
    [
        (["a"], [], ["c", "b", "a"]),
        (["a", "d"], [], ["c", "b", "a", "d"]),  # d's dependency c is already in the order
        (["a"], ["c"], ["b", "a"]),  # loaded earlier (the boot modules): left out
        (["c"], [], ["c"]),
    ],
)
def test_module_load_order_puts_dependencies_first(
    roots: list[str], loaded: list[str], expected: list[str]
) -> None:
    deps = {"a": ["b", "c"], "b": ["c"], "c": [], "d": ["c"]}
    assert build.module_load_order(roots, deps.__getitem__, loaded) == expected


def test_module_load_order_refuses_a_cycle() -> None:
    deps = {"a": ["b"], "b": ["a"]}
    with pytest.raises(build.GuestBuildError, match="cycle through a"):
        build.module_load_order(["a"], deps.__getitem__)


def test_depends_takes_first_alternative_without_versions() -> None:
    fields = {"Depends": "libc6 (>= 2.34), libglib2.0-0 (>= 2.63.3) | libglib-alt, python3:any, zlib1g"}
    assert build._depends(fields) == ["libc6", "libglib2.0-0", "python3", "zlib1g"]
    assert build._depends({}) == []


def test_elf_needed_reads_a_real_binary() -> None:
    needed = build.elf_needed(Path(sys.executable).resolve().read_bytes())
    assert "libc.so.6" in needed


def test_elf_sections_refuses_a_non_elf_file() -> None:
    with pytest.raises(build.GuestBuildError, match="not a little-endian ELF64"):
        build.elf_sections(b"#!/bin/sh\n")


def test_guest_report_parses_every_field() -> None:
    line = ("reconciler-guest: report mem_kib=94788 cpus=2 blk=sr0:374784,vda:67108864 "
            "nics=eth0:52:54:00:12:34:56")  # fmt: skip
    assert GuestReport.parse(line) == GuestReport(
        mem_kib=94788, cpus=2, blk={"sr0": 374784, "vda": 67108864}, nics={"eth0": "52:54:00:12:34:56"}
    )
    empty = "reconciler-guest: report mem_kib=1 cpus=1 blk= nics="
    assert GuestReport.parse(empty) == GuestReport(1, 1, {}, {})
