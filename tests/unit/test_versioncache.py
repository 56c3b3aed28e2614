"""The QEMU version cache: a hit runs nothing, any change to the binary is a miss, a corrupt cache is a
miss (and is rewritten), the file is private and written atomically.

The "binary" is a real executable script that logs each run, so a hit is proven by the log staying empty.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from reconciler import launch, versioncache


@pytest.fixture(autouse=True)
def _no_process_cache() -> None:
    launch._VERSIONS.clear()  # each test sees only the file cache


def fake_qemu(tmp: Path, version: str = "7.2.22") -> tuple[Path, Path]:
    log = tmp / "runs.log"
    binary = tmp / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir(exist_ok=True)
    binary.write_text(f'#!/bin/sh\necho "$@" >> {log}\necho "QEMU emulator version {version} (test)"\n')
    binary.chmod(0o755)
    return binary, log


def runs(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def version(binary: Path, state: Path) -> str:
    launch._VERSIONS.clear()  # as a new command run
    return launch.qemu_version(str(binary), str(state))


def test_miss_then_hit(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    state = tmp_path / "state"
    assert version(binary, state) == "7.2.22" and runs(log) == 1
    assert version(binary, state) == "7.2.22" and runs(log) == 1  # from the file: nothing ran
    cache = state / versioncache.CACHE_FILE
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert [p.name for p in state.iterdir()] == [versioncache.CACHE_FILE]  # no temporary file left
    entry = json.loads(cache.read_text())["binaries"][str(binary)]
    st = binary.stat()
    assert entry == {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                     "ctime_ns": st.st_ctime_ns, "version": "7.2.22"}


def test_without_state_dir_nothing_is_written(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    assert version(binary, tmp_path / "state") == "7.2.22"
    launch._VERSIONS.clear()
    assert launch.qemu_version(str(binary)) == "7.2.22" and runs(log) == 2
    assert launch.qemu_version(str(binary)) == "7.2.22" and runs(log) == 2  # the in-process cache


def test_a_symlink_resolves_to_the_same_entry(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    link = tmp_path / "qemu-link"
    link.symlink_to(binary)
    state = tmp_path / "state"
    version(binary, state)
    assert version(link, state) == "7.2.22" and runs(log) == 1


def test_an_upgrade_in_place_is_a_miss(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    state = tmp_path / "state"
    version(binary, state)
    before = binary.stat()
    fake_qemu(tmp_path, "8.0.05")  # same inode, same length, new contents
    os.utime(binary, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old mtime put back
    assert binary.stat().st_size == before.st_size and binary.stat().st_ino == before.st_ino
    assert version(binary, state) == "8.0.05" and runs(log) == 2
    assert version(binary, state) == "8.0.05" and runs(log) == 2


def test_a_replaced_binary_is_a_miss(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    state = tmp_path / "state"
    version(binary, state)
    new = tmp_path / "new"
    new.write_text(binary.read_text().replace("7.2.22", "9.1.00"))
    new.chmod(0o755)
    os.replace(new, binary)  # as a package manager does: a new inode
    assert version(binary, state) == "9.1.00" and runs(log) == 2


@pytest.mark.parametrize("content", [
    b"", b"{", b"\xff\xfe", b"[]", b'{"format": 2, "binaries": {}}', b'{"format": 1, "binaries": []}',
    b'{"format": 1}', b"null",
])
def test_a_corrupt_cache_is_a_miss_and_is_rewritten(tmp_path: Path, content: bytes) -> None:
    binary, log = fake_qemu(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / versioncache.CACHE_FILE).write_bytes(content)
    assert version(binary, state) == "7.2.22" and runs(log) == 1
    assert version(binary, state) == "7.2.22" and runs(log) == 1


@pytest.mark.parametrize("damage", [
    {"version": ""}, {"version": 7}, {"version": "x" * 101}, {"version": "7.2\n"}, {"ino": "1"},
    {"size": 1.0}, {"mtime_ns": True}, {"ctime_ns": None}, {"dev": 0},
])
def test_a_damaged_entry_is_a_miss(tmp_path: Path, damage: dict[str, object]) -> None:
    binary, log = fake_qemu(tmp_path)
    state = tmp_path / "state"
    version(binary, state)
    cache = state / versioncache.CACHE_FILE
    data = json.loads(cache.read_text())
    data["binaries"][str(binary)].update(damage)
    cache.write_text(json.dumps(data))
    assert version(binary, state) == "7.2.22" and runs(log) == 2


def test_a_dead_writers_temporary_file_is_removed(tmp_path: Path) -> None:
    binary, _ = fake_qemu(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    dead = state / f".{versioncache.CACHE_FILE}.999999999.x.tmp"  # no such PID
    dead.write_text("{")
    version(binary, state)
    assert sorted(p.name for p in state.iterdir()) == [versioncache.CACHE_FILE]


def test_other_binaries_keep_their_entries(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, log_a = fake_qemu(tmp_path / "a")
    b, log_b = fake_qemu(tmp_path / "b", "6.2.0")
    state = tmp_path / "state"
    assert (version(a, state), version(b, state)) == ("7.2.22", "6.2.0")
    assert (version(a, state), version(b, state)) == ("7.2.22", "6.2.0")
    assert (runs(log_a), runs(log_b)) == (1, 1)


def test_an_unwritable_cache_still_answers(tmp_path: Path) -> None:
    binary, log = fake_qemu(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert version(binary, blocker / "state") == "7.2.22"  # the state dir cannot be created: no cache
    assert version(binary, blocker / "state") == "7.2.22" and runs(log) == 2


def test_a_missing_binary_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(launch.LaunchError, match="not found"):
        launch.qemu_version(str(tmp_path / "nope"), str(tmp_path / "state"))


def test_a_remote_node_uses_the_cache_in_its_state_dir_on_the_host(tmp_path: Path) -> None:
    """Each run starts a new agent on the host (an empty in-process cache): the version comes from the
    node's state directory there, as for a local node, and QEMU is not started to ask again."""
    import asyncio
    from typing import Any

    from reconciler.model import NodeSpec
    from reconciler.remote import agent
    from reconciler.remote import protocol as p
    from reconciler.remote.node import RemoteNode

    class AgentLink:  # the agent's own dispatch, without the SSH in between
        async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float) -> Any:
            response = await agent.handle(p.Request(1, method, params or {}))
            assert response.fault is None, response.fault
            return response.result

    binary, log = fake_qemu(tmp_path)
    spec = NodeSpec("r1", str(tmp_path / "state"), qemu_binary=str(binary))
    for _ in range(2):
        launch._VERSIONS.clear()  # a new agent process
        assert asyncio.run(RemoteNode(spec, AgentLink()).qemu_version()) == "7.2.22"  # type: ignore[arg-type]
    assert runs(log) == 1
