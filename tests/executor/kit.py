"""Shared pieces of the apply end-to-end tests: a throwaway world (two TCG nodes with short state dirs,
manifests in a temp dir), running the CLI (in-process or as a subprocess), reading serial logs, and a
reaper that kills every QEMU the test's nodes hold, verified and pinned before any signal."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from reconciler import cli, discovery, layout, procs, statedir
from reconciler.actual import ActualInstance, ActualState
from reconciler.model import Accelerator, NodeSpec, PortRange
from reconciler.pidfd import ProcessHandle

CLI_TIMEOUT = 120.0
BOOT_TIMEOUT = 60.0


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class World:
    """Two nodes (node-a, node-b) on this machine and a manifest directory."""

    root: Path  # short: unix socket paths must fit 108 bytes
    manifests: Path
    kernel: str
    initrd: str
    ports: int  # first migration port of node-a; node-b has the next 16
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)

    def node(self, name: str) -> NodeSpec:
        first = self.ports if name == "node-a" else self.ports + 16
        return NodeSpec(name=name, state_dir=str(self.root / name), accelerator=Accelerator.TCG,
                        migration_ports=PortRange(first, first + 15))

    @property
    def nodes(self) -> list[NodeSpec]:
        return [self.node("node-a"), self.node("node-b")]

    def write_nodes(self) -> None:
        docs = []
        for n in self.nodes:
            docs.append({"apiVersion": "reconciler/v1", "kind": "Node", "metadata": {"name": n.name},
                         "spec": {"address": "127.0.0.1", "stateDir": n.state_dir, "accelerator": "tcg",
                                  "migrationPorts": {"first": n.migration_ports.first,
                                                     "last": n.migration_ports.last},
                                  "memory": "4G"}})
        (self.manifests / "nodes.yaml").write_text(yaml.safe_dump_all(docs))

    def instance(self, name: str, node: str | None = "node-a", *, tag: str | None = None,
                 ignore_acpi: bool = False, **spec: Any) -> None:
        """Declare (or redeclare) an instance booting the test guest; extra spec fields as in YAML."""
        words = [f"reconciler.tag={tag or name}"] + (["reconciler.ignore_acpi=1"] if ignore_acpi else [])
        body: dict[str, Any] = {
            "memory": "128M", "vcpus": 1, "shutdownTimeout": "10s",
            "kernel": {"path": self.kernel, "initrd": self.initrd, "root": "/dev/ram0",
                       "cmdline": " ".join(["quiet", "panic=-1", *words])},
            "serialConsole": True, "nics": [{"mode": "user", "mac": _mac(name)}],
        }
        if node is not None:
            body["node"] = node
        body.update(spec)
        self.instances[name] = body
        doc = {"apiVersion": "reconciler/v1", "kind": "Instance", "metadata": {"name": name}, "spec": body}
        (self.manifests / f"{name}.yaml").write_text(yaml.safe_dump(doc))

    def remove(self, name: str) -> None:
        self.instances.pop(name, None)
        (self.manifests / f"{name}.yaml").unlink()

    def paths(self, node: str, name: str) -> layout.InstancePaths:
        return layout.instance_paths(self.node(node), name)

    def serial_log(self, node: str, name: str) -> Path:
        return Path(self.paths(node, name).serial_log)

    # --- running the CLI ----------------------------------------------------------------------------

    def cli(self, *args: str) -> CliResult:
        """`reconciler <args> <manifests>` in this process."""
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([*args, str(self.manifests)])
        return CliResult(code, out.getvalue(), err.getvalue())

    def apply(self, *args: str) -> CliResult:
        return self.cli("apply", "--yes", *args)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """`reconciler <args> <manifests>` as a child process (stdout+stderr piped together)."""
        return subprocess.Popen([sys.executable, "-m", "reconciler", *args, str(self.manifests)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    # --- looking -------------------------------------------------------------------------------------

    def actual(self) -> ActualState:
        return discovery.discover(self.nodes)

    def live(self, name: str) -> list[ActualInstance]:
        return [i for i in self.actual().find(name) if i.state.has_process]

    def qemu_pids(self, name: str | None = None) -> list[int]:
        """Every live QEMU whose command line points into this world's state dirs (optionally one name)."""
        found = []
        for p in procs.qemu_processes():
            joined = "\0".join(p.cmdline)
            if str(self.root) + "/" in joined and (name is None or f"/instances/{name}/" in joined):
                found.append(p.pid)
        return sorted(found)

    # --- cleanup -------------------------------------------------------------------------------------

    def reap(self) -> None:
        """SIGKILL every QEMU of this world: a process counts only if its argv names our state dirs (we
        made them, uniquely, for this test) and it is pinned by a pidfd before the signal."""
        for pid in self.qemu_pids():
            try:
                want = tuple(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue

            def verify(p: int, argv: tuple[str, ...] = want) -> bool:
                try:
                    return tuple(psutil.Process(p).cmdline()) == argv
                except psutil.Error:
                    return False

            handle = ProcessHandle.open_verified(pid, verify)
            if handle is None:
                continue
            with handle:
                handle.send_signal(signal.SIGKILL)
                asyncio.run(handle.wait_exit(10.0))


def _mac(name: str) -> str:
    h = hashlib.sha256(name.encode()).digest()
    return f"52:54:00:{h[0]:02x}:{h[1]:02x}:{h[2]:02x}"


# Linux's ip_local_port_range starts here: the worlds' migration ports stay below it, where no outgoing
# connection of this machine is given a port (a test that binds all of a node's ports hit one in CI).
EPHEMERAL_FIRST = 32768


@contextlib.contextmanager
def make_world(tmp_path: Path, kernel: str, initrd: str) -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="ra-", dir="/tmp"))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    world = World(root=root, manifests=manifests, kernel=kernel, initrd=initrd,
                  ports=random.randrange(20000, EPHEMERAL_FIRST - 32, 32))
    world.write_nodes()
    try:
        yield world
    finally:
        world.reap()
        shutil.rmtree(root, ignore_errors=True)


def record_of(world: World, node: str, name: str) -> Any:
    return statedir.read_record(world.paths(node, name))



class Lines:
    """The output lines of a child process, read by a thread; `wait_for` blocks on a queue with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line with {needle!r} within {timeout}s:\n" + "\n".join(self.lines))
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"output ended without {needle!r}:\n" + "\n".join(self.lines))
            self.lines.append(line)
            if needle in line:
                return line

    def finish(self, timeout: float = CLI_TIMEOUT) -> tuple[int, str]:
        """Wait for the exit; (exit code, whole output)."""
        code = self.proc.wait(timeout)
        self._thread.join(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return code, "\n".join(self.lines)


def kill_verified(pid: int, must_contain: str) -> None:
    """SIGKILL `pid` (pinned by a pidfd) only if its command line contains `must_contain`; wait for it."""
    def verify(p: int) -> bool:
        try:
            return must_contain in "\0".join(psutil.Process(p).cmdline())
        except psutil.Error:
            return False

    handle = ProcessHandle.open_verified(pid, verify)
    assert handle is not None, f"pid {pid} is gone or not ours"
    with handle:
        handle.send_signal(signal.SIGKILL)
        assert asyncio.run(handle.wait_exit(10.0))


def apply_killed_after(world: World, command: str) -> subprocess.Popen[bytes]:
    """`apply` as a child whose QMP `command` (and nothing after it) reaches QEMU: the child runs with a
    hook (RECONCILER_TEST_STOP_AFTER) that makes it print a line and hang after that command; it is then
    SIGKILLed."""
    env = dict(os.environ, RECONCILER_TEST_STOP_AFTER=command)
    proc = subprocess.Popen([sys.executable, "-c", STOPPER, "apply", "--yes", str(world.manifests)],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    hit = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if b"STOPPED AFTER" in line:
                hit.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert hit.wait(60.0), "the apply never reached " + command
    finally:
        proc.send_signal(signal.SIGKILL)  # our own child
        proc.wait(10.0)
        reader.join(10.0)
        proc.stdout.close()
    return proc


# The child: the CLI, with QmpSession.execute wrapped so that it stops for good after `command`.
STOPPER = """
import asyncio, os, sys
from reconciler import qmp
want = os.environ["RECONCILER_TEST_STOP_AFTER"]
real = qmp.QemuQmpSession.execute
async def execute(self, command, arguments=None, timeout=5.0):
    result = await real(self, command, arguments, timeout)
    if command == want:
        print("STOPPED AFTER", command, flush=True)
        await asyncio.sleep(3600)
    return result
qmp.QemuQmpSession.execute = execute
from reconciler.cli import main
sys.exit(main(sys.argv[1:]))
"""
