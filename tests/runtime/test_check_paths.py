"""Node.check_paths on this machine (LocalNode): what is at each path, on the real file system, one stat per
distinct path however many nodes ask."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from reconciler import node as node_mod
from reconciler.model import NodeSpec
from reconciler.node import LocalNode, check_paths_all, local_nodes, probe_path
from reconciler.pathinfo import MISSING, PathInfo, PathKind


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("x")
    (tmp_path / "exe").write_text("#!/bin/sh\n")
    (tmp_path / "exe").chmod(0o755)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    return tmp_path


CASES = [
    ("file", PathInfo(PathKind.FILE)),
    ("exe", PathInfo(PathKind.FILE, executable=True)),
    ("dir", PathInfo(PathKind.DIRECTORY)),
    ("gone", MISSING),
    ("dangling", MISSING),
    ("link", PathInfo(PathKind.FILE)),
    ("file/below", MISSING),  # a path through a regular file
]


@pytest.mark.parametrize(("name", "expected"), CASES)
def test_probe_path(files: Path, name: str, expected: PathInfo) -> None:
    assert probe_path(str(files / name)) == expected


def test_special_files() -> None:
    assert probe_path("/dev/null") == PathInfo(PathKind.OTHER)
    assert probe_path("/x\0y") == PathInfo(PathKind.ERROR, error="the path contains a NUL character")
    assert probe_path("/" + "x" * 5000) == PathInfo(PathKind.ERROR, error="File name too long")


def test_block_device(tmp_path: Path) -> None:
    dev = tmp_path / "loop"
    try:
        os.mknod(dev, 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")
    assert probe_path(str(dev)) == PathInfo(PathKind.BLOCK_DEVICE)


def test_a_name_is_looked_up_in_path(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", f"{files / 'dir'}:{files}")
    assert probe_path("exe") == PathInfo(PathKind.FILE, executable=True, resolved=str(files / "exe"))
    assert probe_path("file") == MISSING  # not executable: PATH lookup passes it by, as exec does
    assert probe_path("qemu-nope") == MISSING


def test_check_paths_of_a_local_node(files: Path) -> None:
    local = LocalNode(NodeSpec(name="n1", state_dir=str(files / "state")))
    got = asyncio.run(local.check_paths([str(files / "file"), str(files / "gone")]))
    assert got == {str(files / "file"): PathInfo(PathKind.FILE), str(files / "gone"): MISSING}


def test_local_nodes_share_one_stat_per_path(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    real_stat = os.stat

    def counting_stat(path: str) -> os.stat_result:
        seen.append(path)
        return real_stat(path)

    monkeypatch.setattr(node_mod.os, "stat", counting_stat)
    nodes = local_nodes([NodeSpec(name=n, state_dir=str(files / n)) for n in ("a", "b")])
    shared, own = str(files / "file"), str(files / "dir")
    answers = asyncio.run(check_paths_all(nodes, {"a": {shared}, "b": {shared, own}}))
    assert answers == {"a": {shared: PathInfo(PathKind.FILE)},
                       "b": {shared: PathInfo(PathKind.FILE), own: PathInfo(PathKind.DIRECTORY)}}
    assert sorted(seen) == sorted([own, shared])
