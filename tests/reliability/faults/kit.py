"""The fault-injection rig: a two-node world with decoys, a bystander, disk images, and the invariant checks
to run after every fault (`Rig.check_fault`) and after the reconcile that must repair it (`Rig.converge`).

Why one rig: every fault test needs the same witnesses, and a witness left out is an invariant not
checked. Each rig has
- two TCG nodes with short state dirs (executor.kit.World), manifests in tmp;
- canaries (reliability.canary): a signal recorder whose PID is planted as the pidfile of an undeclared
  instance "ghost", and a sleeper; both must never get a signal;
- an unmanaged QEMU named like the instances under test (`-name web1`), started by the test: it must stay
  alive and never be stopped;
- a bystander instance "keep" (optional), running before the fault: its process must never change;
- a raw disk image per instance (hash before, compare after: the reconciler never writes user disks).

Trials: `trials(ci, long)` seeds; `RECONCILER_LONG=1` selects the long form (reliability.profiles).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml
from executor.kit import BOOT_TIMEOUT, Lines, World, make_world

from reconciler import discovery, layout, manifest, qmp
from reconciler.model import NodeSpec
from reconciler.planner import Plan, make_plan

from ..invariants import (
    Canaries,
    assert_converged,
    assert_disks_unchanged,
    assert_no_leaks,
    disk_hashes,
    qemu_by_instance,
)
from ..profiles import LONG

NOT_A_GUEST = frozenset({"inmigrate", "postmigrate"})  # QMP states of a copy that runs no guest
# query-migrate states of a migration still under way: after a SIGKILL of the reconciler QEMU carries on
# on its own, and the two copies' run states are only a consistent snapshot once it has ended.
MIGRATION_IN_FLIGHT = frozenset({"setup", "active", "device", "pre-switchover", "postcopy-active",
                                 "postcopy-paused", "postcopy-recover", "cancelling", "wait-unplug"})
MIGRATION_SETTLE = 30.0


async def _migration_settled(sock: str, timeout: float) -> None:
    """Return once the QEMU at `sock` has no migration under way (a MIGRATION event, under a deadline)."""
    async with qmp.session(sock, timeout) as s:  # events are buffered from here: none can be missed
        answer = await s.execute("query-migrate", timeout=timeout)
        status = answer.get("status") if isinstance(answer, dict) else None
        deadline = time.monotonic() + timeout
        while status in MIGRATION_IN_FLIGHT:
            event = await s.wait_event(["MIGRATION"], max(deadline - time.monotonic(), 0.001))
            status = event.data.get("status")
CLI_DEADLINE = 60.0


def trials(ci: int, long: int = 50) -> list[int]:
    """The seeds of a fault's trials: `ci` in CI, `long` with RECONCILER_LONG=1."""
    return list(range(long if LONG else ci))


def rng_for(kind: str, seed: int) -> random.Random:
    return random.Random(f"{kind}:{seed}")


@dataclass
class Rig:
    world: World
    tmp: Path
    canaries: Canaries
    decoy: subprocess.Popen[bytes]
    decoy_ctime: float
    disks: dict[str, str] = field(default_factory=dict)  # image path -> sha256 before
    bystander: tuple[int, float] | None = None
    ghost_pidfile: Path | None = None

    # --- building the world -------------------------------------------------------------------------

    @property
    def state_dirs(self) -> list[str]:
        return [n.state_dir for n in self.world.nodes]

    def node(self, name: str) -> NodeSpec:
        return self.world.node(name)

    def image(self, name: str, size: str = "1M") -> str:
        path = self.tmp / f"{name}.img"
        if not path.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(path), size], check=True, timeout=30)
            path.write_bytes(random.Random(name).randbytes(1 << 20))  # content worth hashing
            self.disks.update(disk_hashes([path]))
        return str(path)

    def declare(self, name: str, node: str | None = "node-a", **spec: Any) -> None:
        """An instance of the test guest with its own raw data disk (writeback: /tmp may lack O_DIRECT)."""
        spec.setdefault("disks", [{"path": self.image(name), "cache": "writeback"}])
        self.world.instance(name, node, **spec)

    def set_node(self, name: str, **fields: Any) -> None:
        """Rewrite nodes.yaml with extra spec fields for node `name` (e.g. qemuBinary, memory)."""
        path = self.world.manifests / "nodes.yaml"
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if doc["metadata"]["name"] == name:
                doc["spec"].update(fields)
        path.write_text(yaml.safe_dump_all(docs))

    def start_bystander(self) -> None:
        """Run "keep" on node-a; from now on every check asserts its process never changes."""
        self.declare("keep", "node-a")
        done = self.world.apply("--target", "keep")
        assert done.code == 0, done.text
        live = qemu_by_instance(self.state_dirs)["keep"]
        self.bystander = (live[0].pid, live[0].create_time)

    def apply_ok(self, *args: str) -> str:
        done = self.world.apply(*args)
        assert done.code == 0, done.text
        return done.text

    def wait_ready(self, node: str, name: str) -> None:
        from conftest import SerialLog

        SerialLog(self.world.serial_log(node, name)).wait_for("reconciler-guest: ready", BOOT_TIMEOUT)

    # --- looking ------------------------------------------------------------------------------------

    def plan(self) -> Plan:
        desired = manifest.load([str(self.world.manifests)]).desired
        assert desired is not None, "the manifests do not load"
        return make_plan(desired, discovery.discover(desired.nodes.values()))

    def guests(self, name: str) -> list[tuple[str, int, str]]:
        """(node state dir, pid, QMP status or error) of every QEMU of `name` that may run its guest."""
        out = []
        copies = qemu_by_instance(self.state_dirs).get(name, [])
        socks = [layout.instance_paths(next(n for n in self.world.nodes if n.state_dir == p.state_dir),
                                       name).qmp for p in copies]
        for sock in socks:  # a migration left running by the killed reconciler ends first
            with contextlib.suppress(Exception):  # a copy that exits meanwhile is judged below
                asyncio.run(_migration_settled(str(sock), MIGRATION_SETTLE))
        for p in qemu_by_instance(self.state_dirs).get(name, []):  # without those that exited meanwhile
            node = next(n for n in self.world.nodes if n.state_dir == p.state_dir)
            sock = layout.instance_paths(node, name).qmp
            try:
                status = asyncio.run(qmp.query_status(sock, 5.0))
            except Exception as err:  # a copy we cannot ask counts as a guest (conservative)
                status = f"unknown ({err})"
            if status not in NOT_A_GUEST:
                out.append((node.name, p.pid, status))
        return out

    # --- the invariants -----------------------------------------------------------------------------

    def check_witnesses(self) -> None:
        """Invariant 2 (decoys) and the bystander."""
        self.canaries.check()
        assert self.decoy.poll() is None, f"the unmanaged QEMU decoy died: {self.decoy.returncode}"
        proc = psutil.Process(self.decoy.pid)
        assert proc.create_time() == self.decoy_ctime
        assert proc.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE), proc.status()
        if self.bystander is not None:
            live = qemu_by_instance(self.state_dirs).get("keep", [])
            assert [(p.pid, p.create_time) for p in live] == [self.bystander], (
                f"the bystander was touched: {live} vs {self.bystander}")

    def check_fault(self, migrating: frozenset[str] = frozenset()) -> None:
        """Right after a fault: never two QEMUs of one instance (a migration's target and source may
        coexist, but at most one of them runs the guest); witnesses intact."""
        settle_launches(self.state_dirs, manifests=self.world.manifests)
        for name, found in qemu_by_instance(self.state_dirs).items():
            if name in migrating:
                assert len(found) <= 2, (name, found)
                guests = self.guests(name)
                assert len(guests) <= 1, f"{name}: more than one copy runs the guest: {guests}"
            else:
                assert len(found) <= 1, f"{name}: more than one QEMU: {found}"
        self.check_witnesses()

    def converge(self, where: Mapping[str, str | None], *args: str) -> str:
        """Invariant 4 and 5: `apply` succeeds, the next plan is empty, each instance runs exactly where
        declared (None: nowhere), nothing leaked, disks unchanged, witnesses intact. Returns apply's text."""
        text = self.apply_ok(*args)
        assert_converged(self.plan())
        by_name = qemu_by_instance(self.state_dirs)
        actual = self.world.actual()
        for name, node in where.items():
            procs = by_name.get(name, [])
            if node is None:
                assert procs == [], f"{name} should not run: {procs}"
                continue
            assert len(procs) == 1, f"{name}: expected one QEMU on {node}: {procs}"
            live = [(i.node, i.state.value, i.pid) for i in actual.find(name) if i.state.has_process]
            assert live == [(node, "running", procs[0].pid)], (name, live)
        self.assert_no_leaks()
        assert_disks_unchanged(self.disks)
        self.check_witnesses()
        return text

    def assert_no_leaks(self) -> None:
        assert_no_leaks(self.state_dirs, ignore=[self.ghost_pidfile] if self.ghost_pidfile else [])

    # --- running and killing the CLI ----------------------------------------------------------------

    def spawn(self, *args: str) -> Lines:
        return Lines(self.world.spawn(*args))

    def spawn_watch(self, wait_ready: bool = True, grace: float = 5.0) -> Lines:
        """`reconciler watch` as a child (text log on the merged output), once it reports ready."""
        status = self.tmp / "watch-status.json"
        proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "watch", str(self.world.manifests), "--resync", "30",
             "--status-file", str(status), "--debounce", "0.05", "--shutdown-grace", str(grace)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = Lines(proc)
        if wait_ready:
            lines.wait_for(" ready ", CLI_DEADLINE)
        return lines


def settle_launches(state_dirs: list[str], timeout: float = 15.0, manifests: Path | None = None) -> None:
    """Wait for QEMU foreground processes of ours to exit. `-daemonize` keeps the launching process (same
    argv, a session leader: the reconciler starts it with a new session) until the double-forked daemon is
    set up; a reconciler killed mid-launch leaves that pair for a moment. Its end is an event (pidfd).

    A reconciler killed inside its Popen of QEMU can leave the forked child before its exec: it still
    carries the reconciler's command line (with `manifests`), so it is no QEMU yet, and it becomes the
    launching QEMU a moment later (seen under load: two QEMUs of one instance, the launching one and its
    daemon). Those forks are waited for too: a process with a reconciler's command line that is not one
    this test runs (its parent is the test process)."""
    # The forks first: one that execs QEMU meanwhile is then listed as a QEMU below.
    pending = [(pid, f"a fork of a reconciler (pid {pid}) before its exec")
               for pid in (_reconciler_forks(manifests) if manifests is not None else [])]
    for procs in qemu_by_instance(state_dirs).values():
        for p in procs:
            with contextlib.suppress(OSError):
                if os.getsid(p.pid) == p.pid:  # not the daemon (setsid in the intermediate, forked again)
                    pending.append((p.pid, f"QEMU foreground process {p.pid} of {p.name}"))
    for pid, what in pending:
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
            assert ready, f"{what} did not exit in {timeout}s"
        finally:
            os.close(fd)


def _reconciler_forks(manifests: Path) -> list[int]:
    """Processes with a reconciler's command line for `manifests` whose parent is not this test process."""
    found = []
    for proc in psutil.process_iter(["cmdline", "ppid", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["ppid"] == os.getpid():
            continue
        if "reconciler" in cmd[1:3] and str(manifests) in cmd:
            found.append(proc.pid)
    return found


def sigkill_after(lines: Lines, needle: str | None, delay: float) -> tuple[bool, str]:
    """Wait for a line containing `needle` (None: start the clock now), sleep `delay` (the seeded random
    point of the fault), SIGKILL the child (our own). (whether the kill landed before it exited, output)."""
    return signal_after(lines, needle, delay, signal.SIGKILL)


def signal_after(lines: Lines, needle: str | None, delay: float, sig: signal.Signals) -> tuple[bool, str]:
    """`sigkill_after` with any signal; after SIGINT/SIGTERM the child must exit by itself within the CLI
    deadline (`apply` with 130, `watch` with 0). (whether the signal landed before it exited, output)."""
    if needle is not None:
        lines.wait_for(needle, CLI_DEADLINE)
    time.sleep(delay)
    landed = lines.proc.poll() is None
    lines.proc.send_signal(sig)
    code, out = lines.finish(CLI_DEADLINE)
    expected = {signal.SIGKILL: -9, signal.SIGINT: 130, signal.SIGTERM: 0}[sig]
    return landed and code == expected, out


def start_decoy(name: str) -> subprocess.Popen[bytes]:
    """An unmanaged QEMU (no pidfile, no monitor) calling itself `name`: the reconciler must not touch it."""
    return subprocess.Popen(
        ["qemu-system-x86_64", "-name", name, "-machine", "none", "-accel", "tcg", "-nodefaults",
         "-display", "none", "-S", "-monitor", "none", "-serial", "none"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)


@contextlib.contextmanager
def make_rig(tmp_path: Path, kernel: str, initrd: str, decoy_name: str = "web1") -> Iterator[Rig]:
    with make_world(tmp_path, kernel, initrd) as world:
        canaries = Canaries.start(world.root)
        decoy = start_decoy(decoy_name)
        try:
            rig = Rig(world, tmp_path, canaries, decoy, psutil.Process(decoy.pid).create_time())
            ghost = Path(layout.instance_paths(world.node("node-a"), "ghost").pidfile)
            canaries.plant_pidfile(ghost)
            rig.ghost_pidfile = ghost
            yield rig
        finally:
            canaries.stop()
            if decoy.poll() is None:
                decoy.kill()  # our own child
            decoy.wait(10)


def deadline_run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a CLI child under a hard deadline (a hung reconciler fails the test instead of hanging it)."""
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def cli_argv(world: World, *args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", *args, str(world.manifests)]
