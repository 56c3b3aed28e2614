"""End-to-end: `plan` checks on the node what a start needs (kernel, initrd, disk, qemuBinary, bridge) and
names what is missing at its manifest line; `apply` refuses the same way and starts nothing. The CLI runs
as a subprocess on real files; the positive cases launch real QEMU (TCG) with the test guest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Guest
from executor.kit import World, make_world

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

NODES = """\
apiVersion: reconciler/v1
kind: Node
metadata:
  name: node-a
spec:
  stateDir: {state}
  accelerator: tcg
  migrationPorts: {{first: {first}, last: {last}}}
  qemuBinary: {binary}
"""
WEB1 = """\
apiVersion: reconciler/v1
kind: Instance
metadata:
  name: web1
spec:
  node: node-a
  memory: {memory}
  kernel:
    path: {kernel}
    initrd: {initrd}
    root: /dev/ram0
  disks:
    - path: {disk}
  nics:
    - mac: "52:54:00:00:0e:01"
      {nic}
"""


class Tree:
    """web1 on node-a, booting the test guest with one raw disk; each file is a parameter."""

    def __init__(self, world: World, tmp: Path, guest: Guest) -> None:
        self.world = world
        self.dir = world.manifests
        self.kernel = str(tmp / "vmlinuz")  # a copy, so a test may delete it
        shutil.copyfile(guest.kernel, self.kernel)
        self.initrd = str(guest.initrd)
        self.disk = str(tmp / "disk.img")
        with open(self.disk, "wb") as fh:
            fh.truncate(1024 * 1024)
        self.binary = shutil.which("qemu-system-x86_64") or "qemu-system-x86_64"
        self.nic = "mode: user"
        self.memory = "128M"
        for f in self.dir.iterdir():
            f.unlink()
        self.write()

    def write(self) -> None:
        node = self.world.node("node-a")
        (self.dir / "nodes.yaml").write_text(NODES.format(
            state=node.state_dir, first=node.migration_ports.first, last=node.migration_ports.last,
            binary=self.binary))
        (self.dir / "web1.yaml").write_text(WEB1.format(
            memory=self.memory, kernel=self.kernel, initrd=self.initrd, disk=self.disk, nic=self.nic))

    def run(self, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "reconciler", *args, str(self.dir)],
                              capture_output=True, text=True, timeout=120, check=False,
                              stdin=subprocess.DEVNULL)


@pytest.fixture
def tree(tmp_path: Path, guest: Guest) -> Iterator[Tree]:
    with make_world(tmp_path, str(guest.kernel), str(guest.initrd)) as world:
        yield Tree(world, tmp_path, guest)


def _error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  x ")]


def _nothing_started(tree: Tree) -> None:
    assert tree.world.qemu_pids() == []
    assert not os.path.exists(tree.world.paths("node-a", "web1").dir)  # no record, pidfile or intent


MISSING = [
    ("kernel", lambda t: setattr(t, "kernel", t.kernel + ".gone"),
     "web1.yaml:9:5: instance web1: spec.kernel.path: '{kernel}' does not exist on node node-a"),
    ("initrd", lambda t: setattr(t, "initrd", "/var/tmp"),
     "web1.yaml:10:5: instance web1: spec.kernel.initrd: '/var/tmp' on node node-a is a directory, "
     "not a regular file"),
    ("disk", lambda t: setattr(t, "disk", t.disk + ".gone"),
     "web1.yaml:13:7: instance web1: spec.disks[0].path: '{disk}' does not exist on node node-a"),
    ("bridge", lambda t: setattr(t, "nic", "bridge: rcnobr0"),
     "web1.yaml:16:7: instance web1: spec.nics[0].bridge: there is no bridge 'rcnobr0' on node node-a "
     "(/sys/class/net/rcnobr0/bridge is missing)"),
    ("qemuBinary", lambda t: setattr(t, "binary", "qemu-nope-rc"),
     "nodes.yaml:9:3: instance web1: node node-a: spec.qemuBinary: 'qemu-nope-rc' is not found in PATH"),
]


@pytest.mark.parametrize(("what", "spoil", "line"), MISSING, ids=[m[0] for m in MISSING])
def test_plan_and_apply_refuse_what_the_node_lacks(tree: Tree, what: str, spoil: object, line: str) -> None:
    spoil(tree)  # type: ignore[operator]
    tree.write()
    expected = f"  x {tree.dir}/" + line.format(kernel=tree.kernel, disk=tree.disk)
    plan = tree.run("plan")
    assert plan.returncode == 1, plan.stdout + plan.stderr
    assert _error_lines(plan.stdout) == [expected]
    assert plan.stdout.endswith("1 error: this plan cannot be applied.\n")
    applied = tree.run("apply", "--yes")
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert _error_lines(applied.stdout) == [expected]
    assert "the plan has errors; nothing applied" in applied.stderr
    _nothing_started(tree)


def test_validate_does_not_look_at_the_host(tree: Tree) -> None:
    tree.kernel += ".gone"
    tree.write()
    done = tree.run("validate")
    assert done.returncode == 0 and done.stdout.startswith("valid: 1 instances"), done.stdout + done.stderr


def test_a_saved_plan_is_checked_again_at_apply(tree: Tree, tmp_path: Path) -> None:
    saved = str(tmp_path / "web1.plan")
    assert tree.run("plan", "--out", saved).returncode == 0
    os.rename(tree.disk, tree.disk + ".moved")
    applied = tree.run("apply", "--plan", saved)
    assert applied.returncode == 1, applied.stdout + applied.stderr
    assert _error_lines(applied.stdout) == [
        f"  x {tree.dir}/web1.yaml:13:7: instance web1: spec.disks[0].path: '{tree.disk}' does not exist on "
        "node node-a"]
    _nothing_started(tree)


def test_everything_there_starts_and_a_running_instance_needs_its_files_only_to_start_again(
        tree: Tree) -> None:
    applied = tree.run("apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert len(tree.world.qemu_pids("web1")) == 1
    os.unlink(tree.kernel)  # QEMU loaded it at start: the running instance does not need it
    plan = tree.run("plan", "--detailed-exitcode")
    assert plan.returncode == 0 and "No changes" in plan.stdout, plan.stdout + plan.stderr
    tree.memory = "160M"  # a restart would launch a new QEMU: now the kernel is needed again
    tree.write()
    plan = tree.run("plan")
    assert plan.returncode == 1
    assert _error_lines(plan.stdout) == [
        f"  x {tree.dir}/web1.yaml:9:5: instance web1: spec.kernel.path: '{tree.kernel}' does not exist on "
        "node node-a"]


NETNS = ("unshare", "--net", "--mount", "--")  # a private network namespace: nothing appears on the host


def _in_netns(link: str) -> tuple[str, ...]:
    """Run in a fresh network namespace (with its own /sys, so /sys/class/net shows its interfaces) after
    `ip link add rcbr0 <link>`."""
    script = f'mount -t sysfs sysfs /sys && ip link add rcbr0 {link} && exec "$@"'
    return (*NETNS, "sh", "-c", script, "sh")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
                    reason="a bridge in a private network namespace needs root, unshare and ip")
def test_a_linux_bridge_that_exists_passes(tree: Tree) -> None:
    tree.nic = "bridge: rcbr0"
    tree.write()
    present = tree.run("plan", prefix=_in_netns("type bridge"))
    assert present.returncode == 0, present.stdout + present.stderr
    assert "  + web1 on node-a" in present.stdout and "Errors:" not in present.stdout
    not_a_bridge = tree.run("plan", prefix=_in_netns("type veth peer name rcbr0p"))
    assert not_a_bridge.returncode == 1, not_a_bridge.stdout + not_a_bridge.stderr
    assert _error_lines(not_a_bridge.stdout) == [
        f"  x {tree.dir}/web1.yaml:16:7: instance web1: spec.nics[0].bridge: there is no bridge 'rcbr0' on "
        "node node-a (/sys/class/net/rcbr0/bridge is missing)"]
