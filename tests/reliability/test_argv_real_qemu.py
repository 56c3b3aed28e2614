"""The QEMU option model, validated against QEMU itself: hostile file names reach QEMU exactly.

Files with hostile names (commas, '=', option-looking text, spaces, quotes, backslashes, unicode) are
attached as disks of an instance whose state directory also has a comma and '=' in its name; QEMU starts
paused (-S, TCG) and `query-named-block-nodes` must show each exact filename, and the QMP/serial sockets
and serial log must exist at the exact paths the layout chose. A few extra names come from Hypothesis
(the same alphabet as test_fuzz_argv), each checked by the model first and then by QEMU.
"""

from __future__ import annotations

import asyncio
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler import argv, launch, qmp
from reconciler.model import Accelerator, CacheMode, Disk, InstanceSpec, NodeSpec

from .profiles import fuzz
from .test_fuzz_argv import SPECIAL, check_round_trip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NAMES = ["a,b", "a,,b", ",", ",,", "x=y", "file=etc,passwd", "a,driver=host_device,filename=x",
         "trailing,", "sp ace", "quote'\"", "back\\slash", "ünï😀", "read-only=on,x", "-S", "help", "?"]


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="q,a=b ", dir="/tmp"))  # hostile and short (sun_path)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _filenames(paths: argv.Launch) -> dict[str, str]:
    async def ask() -> dict[str, str]:
        async with qmp.session(paths.paths.qmp) as s:
            nodes = await s.execute("query-named-block-nodes", {"flat": True})
        return {n["node-name"]: n["file"] for n in nodes}
    return asyncio.run(ask())


def start_and_read(spec: InstanceSpec, node: NodeSpec) -> dict[str, str]:
    """Start `spec` paused, return QEMU's own view of block node filenames; check socket paths."""
    from runtime.helpers import Reaper

    assert check_round_trip(spec, node) is not None, "the model must accept it first"
    built = argv.build_launch(spec, node)
    reaper = Reaper()
    try:
        reaper.launched.append(asyncio.run(launch.launch(spec.name, built.argv, built.paths, 30.0)))
        socks = built.paths.sockets if spec.serial_console else (built.paths.qmp, built.paths.qmp_watch)
        for sock in socks:
            assert stat.S_ISSOCK(Path(sock).lstat().st_mode), sock
        assert Path(built.paths.serial_log).is_file() == spec.serial_console
        return _filenames(built)
    finally:
        reaper.reap()


def _node(workdir: Path) -> NodeSpec:
    return NodeSpec(name="n1", state_dir=str(workdir / "s,t=u"), accelerator=Accelerator.TCG)


def test_hostile_filenames_reach_qemu_exactly(workdir: Path) -> None:
    disks = workdir / "d"
    disks.mkdir()
    paths = []
    for name in NAMES:
        p = disks / name
        p.write_bytes(b"\0" * 512)
        paths.append(str(p))
    spec = InstanceSpec(name="hostile", memory_mib=32, extra_args=("-S",), disks=tuple(
        Disk(path=p, read_only=True, cache=CacheMode.WRITEBACK) for p in paths))
    files = _filenames_for(spec, _node(workdir))
    assert {k: v for k, v in files.items() if k.endswith("-file")} == {
        f"disk{i}-file": p for i, p in enumerate(paths)}


def _filenames_for(spec: InstanceSpec, node: NodeSpec) -> dict[str, str]:
    return start_and_read(spec, node)


name_text = st.text(st.sampled_from([c for c in SPECIAL if c != "/"]) | st.characters(
    blacklist_categories=("Cs", "Cc"), blacklist_characters="/"), min_size=1, max_size=40).filter(
    lambda s: s not in (".", "..") and len(s.encode()) < 200)


@fuzz(10)
@given(st.lists(name_text, min_size=1, max_size=3, unique=True))
def test_generated_filenames_reach_qemu_exactly(names: list[str]) -> None:
    d = Path(tempfile.mkdtemp(prefix="q,g ", dir="/tmp"))
    try:
        paths = []
        for i, name in enumerate(names):
            p = d / f"{i}{name}"
            p.write_bytes(b"\0" * 512)
            paths.append(str(p))
        spec = InstanceSpec(name="gen", memory_mib=32, extra_args=("-S",), serial_console=False, disks=tuple(
            Disk(path=p, read_only=True, cache=CacheMode.WRITEBACK) for p in paths))
        files = start_and_read(spec, _node(d))
        assert [files[f"disk{i}-file"] for i in range(len(paths))] == paths
    finally:
        shutil.rmtree(d, ignore_errors=True)
