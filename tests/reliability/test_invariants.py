"""The invariant checks, proven able to fail, then used on a real apply with decoys and a broken manifest.

Each check first meets the fault it exists for (a signalled canary, two QEMUs for one instance, a left
intent file, a changed disk) so it cannot pass vacuously; then one end-to-end run applies a manifest with
a disk and a stale pidfile naming a canary, applies a broken manifest (nothing may move), repairs it
(converges; the next plan is empty), halts it (no leaks) and checks the canaries and the disk image.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import argv, cli, discovery, launch, layout
from reconciler.manifest import load
from reconciler.model import Accelerator, InstanceSpec, NodeSpec
from reconciler.planner import make_plan

from .invariants import (
    Canaries,
    assert_converged,
    assert_disks_unchanged,
    assert_no_leaks,
    assert_single_qemu,
    assert_untouched,
    disk_hashes,
    snapshot,
)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="inv-", dir="/tmp"))  # short: unix socket paths
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def canaries(short_tmp: Path) -> Iterator[Canaries]:
    c = Canaries.start(short_tmp)
    try:
        yield c
    finally:
        c.stop()


def test_canary_notices_a_signal(canaries: Canaries) -> None:
    canaries.check()
    os.kill(canaries.recorder.pid, signal.SIGTERM)  # our own child: the fault this check exists for
    assert canaries.wait_signal() == "SIGTERM"
    with pytest.raises(AssertionError, match="SIGTERM"):
        canaries.check()


def test_canary_notices_a_dead_sleeper(canaries: Canaries) -> None:
    canaries.sleeper.kill()
    canaries.sleeper.wait(5)
    with pytest.raises(AssertionError, match="died"):
        canaries.check()


def test_leak_check_finds_leftovers(short_tmp: Path) -> None:
    d = short_tmp / "instances" / "web"
    d.mkdir(parents=True)
    (d / "intent.json").write_text("{}")
    (d / "qemu.pid").write_text("1\n")
    with pytest.raises(AssertionError, match=r"intent\.json") as err:
        assert_no_leaks([str(short_tmp)])
    assert "qemu.pid" in str(err.value)


def test_disk_check_finds_a_change(short_tmp: Path) -> None:
    disk = short_tmp / "d.img"
    disk.write_bytes(b"\0" * 4096)
    before = disk_hashes([disk])
    assert_disks_unchanged(before)
    with disk.open("r+b") as f:
        f.seek(100)
        f.write(b"x")
    with pytest.raises(AssertionError, match="changed"):
        assert_disks_unchanged(before)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_duplicate_qemu_is_caught(short_tmp: Path) -> None:
    from runtime.helpers import Reaper

    spec = InstanceSpec(name="dup", memory_mib=32, serial_console=False, extra_args=("-S",))
    reaper = Reaper()
    try:
        dirs = []
        for n in ("a", "b"):
            node = NodeSpec(name=n, state_dir=str(short_tmp / n), accelerator=Accelerator.TCG)
            built = argv.build_launch(spec, node)
            reaper.launched.append(asyncio.run(launch.launch("dup", built.argv, built.paths, 30.0)))
            dirs.append(node.state_dir)
            if n == "a":
                assert set(assert_single_qemu(dirs)) == {"dup"}
        with pytest.raises(AssertionError, match="more than one QEMU"):
            assert_single_qemu(dirs)
    finally:
        reaper.reap()


# --- end to end ------------------------------------------------------------------------------------

INSTANCE = """apiVersion: reconciler/v1
kind: Instance
metadata: {{name: inv1}}
spec:
  memory: 32M
  node: n1
  disks: [{{path: {disk}, cache: writeback}}]
  qemuExtraArgs: ["-S"]
"""


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_apply_with_decoys_and_a_broken_manifest(short_tmp: Path, canaries: Canaries) -> None:
    from runtime.helpers import Reaper

    from reconciler import statedir

    state, tree = short_tmp / "state", short_tmp / "m"
    tree.mkdir()
    disk = short_tmp / "disk.img"
    disk.write_bytes(os.urandom(1 << 16))
    hashes = disk_hashes([disk])
    (tree / "n.yaml").write_text("apiVersion: reconciler/v1\nkind: Node\nmetadata: {name: n1}\n"
                                 f"spec: {{stateDir: {state}, accelerator: tcg}}\n")
    inst = tree / "i.yaml"
    good = INSTANCE.format(disk=disk)
    inst.write_text(good)
    canaries.plant_pidfile(state / "instances" / "inv1" / "qemu.pid")  # stale pidfile: a stranger's PID
    canaries.plant_pidfile(state / "instances" / "ghost" / "qemu.pid")  # no record, not declared
    dirs = [str(state)]
    reaper = Reaper()

    def plan_now() -> object:
        desired = load([str(tree)]).desired
        assert desired is not None
        return make_plan(desired, discovery.discover(desired.nodes.values()))

    try:
        assert cli.main(["apply", "--yes", str(tree)]) == 0
        rec = statedir.read_record(layout.instance_paths(NodeSpec(name="n1", state_dir=str(state)), "inv1"))
        assert rec is not None
        reaper.launched.append(launch.Launched(rec.pid, rec.create_time, rec.started_at, rec.argv))
        canaries.check()
        before = snapshot(dirs)
        assert set(before) == {"inv1"}

        for broken in ("spec: [", "apiVersion: reconciler/v1\nkind: Instance\nmetadata: {name: inv1}\n"
                       "spec: {memory: lots}\n", "\0binary"):
            inst.write_text(broken)
            assert cli.main(["apply", "--yes", str(tree)]) != 0
            assert_untouched(before, snapshot(dirs))
            canaries.check()

        inst.write_text(good)
        plan = plan_now()
        assert_converged(plan)  # type: ignore[arg-type]
        inst.write_text(good + "  runStrategy: Halted\n")
        assert cli.main(["apply", "--yes", "--force", str(tree)]) == 0
        assert_converged(plan_now())  # type: ignore[arg-type]
        (state / "instances" / "ghost" / "qemu.pid").unlink()  # our planted decoy, not a leak
        assert_no_leaks(dirs)
        assert_disks_unchanged(hashes)
        canaries.check()
    finally:
        reaper.reap()
