"""Disk and host trouble, and concurrency: a missing image, an image locked by another process, an
immutable image for a read-write disk, a node without memory for the plan, a read-only state directory,
and two applies plus a watch daemon started at once. Each gives one clear line (no traceback), leaves no
QEMU without a record, never touches a user disk, and the next reconcile converges."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import ExitCode

from ..invariants import qemu_by_instance
from .kit import Rig, cli_argv

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _failed_start(rig: Rig, needle: str) -> None:
    failed = rig.world.apply()
    assert failed.code == ExitCode.ERROR, failed.text
    assert "Traceback" not in failed.err
    errors = [ln for ln in failed.err.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], failed.err
    _nothing_made(rig)


def _nothing_made(rig: Rig) -> None:
    rig.check_fault()
    assert "web1" not in qemu_by_instance(rig.state_dirs)
    assert not Path(rig.world.paths("node-a", "web1").dir).exists()  # nothing half-made
    rig.assert_no_leaks()


def test_missing_disk_image(rig: Rig) -> None:
    rig.declare("web1", "node-a", disks=[{"path": str(rig.tmp / "nope.img"), "cache": "writeback"}])
    refused = rig.world.apply()  # the plan checks the node first: nothing is launched at all
    assert refused.code == ExitCode.ERROR, refused.text
    assert "Traceback" not in refused.err
    missing = [ln for ln in refused.out.splitlines() if "spec.disks[0].path" in ln]
    assert len(missing) == 1 and "nope.img' does not exist on node node-a" in missing[0], refused.out
    _nothing_made(rig)
    rig.declare("web1", "node-a")
    rig.converge({"web1": "node-a", "keep": "node-a"})


def test_image_locked_by_another_process(rig: Rig) -> None:
    image = rig.image("web1")
    holder = subprocess.Popen(["qemu-io", "-f", "raw", image], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # holds the write lock
    try:
        rig.declare("web1", "node-a")
        _failed_start(rig, "lock")
        assert holder.poll() is None  # not ours: never touched
    finally:
        assert holder.stdin is not None
        holder.stdin.close()  # qemu-io quits at EOF
        holder.wait(10)
    rig.converge({"web1": "node-a", "keep": "node-a"})


def test_immutable_image_for_a_read_write_disk(rig: Rig) -> None:
    image = rig.image("web1")
    subprocess.run(["chattr", "+i", image], check=True)  # root ignores chmod 0444; immutable it respects
    try:
        rig.declare("web1", "node-a")
        _failed_start(rig, "web1.img")
    finally:
        subprocess.run(["chattr", "-i", image], check=True)
    rig.converge({"web1": "node-a", "keep": "node-a"})


def test_not_enough_memory_on_the_node(rig: Rig) -> None:
    rig.declare("web1", "node-a", memory="8G")  # node-a offers 4G
    failed = rig.world.apply()
    assert failed.code == ExitCode.ERROR and "nothing applied" in failed.err, failed.text
    assert "Traceback" not in failed.err
    rig.check_fault()
    assert "web1" not in qemu_by_instance(rig.state_dirs)
    rig.declare("web1", "node-a")
    rig.converge({"web1": "node-a", "keep": "node-a"})


def test_read_only_state_directory(rig: Rig) -> None:
    state = Path(rig.node("node-b").state_dir)
    state.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(state)], check=True)
    try:
        rig.declare("web1", "node-b")
        failed = rig.world.apply()
        assert failed.code == ExitCode.ERROR, failed.text
        assert "Traceback" not in failed.err and "Read-only file system" in failed.err, failed.err
        assert len(failed.err.strip().splitlines()) == 1, failed.err
        rig.check_fault()
        assert "web1" not in qemu_by_instance(rig.state_dirs)
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)
    rig.converge({"web1": "node-b", "keep": "node-a"})


def test_two_applies_and_a_watch_at_once(rig: Rig) -> None:
    rig.declare("web1", "node-a")
    rig.declare("web2", "node-b")
    watch = rig.spawn_watch(wait_ready=False)  # its first pass races the two applies below
    try:
        applies = [subprocess.Popen(cli_argv(rig.world, "apply", "--yes"), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for _ in range(2)]
        for p in applies:
            out, _ = p.communicate(timeout=90)
            assert p.returncode == 0, out
            rig.check_fault()
        watch.wait_for(" ready ", 60)
        rig.check_fault()
    finally:
        watch.proc.terminate()  # our own child
        watch.finish(30)
    rig.converge({"web1": "node-a", "web2": "node-b", "keep": "node-a"})
