"""End-to-end: a start asks QEMU for its version only when the node's cache cannot answer.

The node's `qemuBinary` is a wrapper that logs each invocation and then runs the real QEMU (under the
wrapper's own name, so the recorded argv is the command line). Each `apply` is a separate process, so
nothing is remembered in memory between them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import Guest
from executor.kit import World, make_world, record_of

from reconciler import versioncache

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REAL_QEMU = shutil.which("qemu-system-x86_64")


@pytest.fixture
def world(tmp_path: Path, guest: Guest) -> Iterator[World]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as w:
        yield w


def wrapper(world: World, tmp_path: Path) -> tuple[Path, Path]:
    log = tmp_path / "qemu-runs.log"
    binary = tmp_path / "bin" / "qemu-system-x86_64"
    binary.parent.mkdir()
    binary.write_text(f'#!/bin/bash\necho "$*" >> {log}\nexec -a "$0" {REAL_QEMU} "$@"\n')
    binary.chmod(0o755)
    docs = list(yaml.safe_load_all((world.manifests / "nodes.yaml").read_text()))
    for doc in docs:
        doc["spec"]["qemuBinary"] = str(binary)
    (world.manifests / "nodes.yaml").write_text(yaml.safe_dump_all(docs))
    return binary, log


def apply(world: World) -> None:
    done = subprocess.run([sys.executable, "-m", "reconciler", "apply", "--yes", str(world.manifests)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def version_runs(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if line == "--version")


def launches(log: Path) -> int:
    return sum(1 for line in log.read_text().splitlines() if line.startswith("-name "))


@pytest.mark.skipif(REAL_QEMU is None, reason="no QEMU")
def test_a_start_runs_qemu_version_only_on_a_cache_miss(world: World, tmp_path: Path) -> None:
    binary, log = wrapper(world, tmp_path)
    world.instance("v1", "node-a")
    apply(world)
    assert (launches(log), version_runs(log)) == (1, 1)  # first run: a miss
    cache = Path(world.node("node-a").state_dir) / versioncache.CACHE_FILE
    assert cache.stat().st_mode & 0o777 == 0o600
    version = record_of(world, "node-a", "v1").qemu_version
    assert version.startswith("7.")

    world.instance("v2", "node-a")
    apply(world)
    assert (launches(log), version_runs(log)) == (2, 1)  # answered by the cache: QEMU not asked
    assert record_of(world, "node-a", "v2").qemu_version == version

    st = binary.stat()
    os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the binary changed
    world.instance("v3", "node-a")
    apply(world)
    assert (launches(log), version_runs(log)) == (3, 2)
    assert record_of(world, "node-a", "v3").qemu_version == version
