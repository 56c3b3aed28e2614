"""Everything the executor does to a node, behind one small interface.

Today every node is on this machine (`LocalNode`, built on discovery, launch, qmp, pidfd, statedir and
lock). Later the same manifests drive many hosts over OpenSSH; the executor talks only to the `Node`
Protocol, so a remote implementation slots in without touching the executor's logic.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
from collections.abc import Sequence
from typing import Protocol

from reconciler import launch as launch_mod
from reconciler import layout, procs, qmp, statedir
from reconciler.actual import ActualState
from reconciler.argv import Launch
from reconciler.model import NodeSpec
from reconciler.pidfd import ProcessHandle
from reconciler.records import AppliedRecord


class Node(Protocol):
    """One host (or one state directory on a host) that runs instances."""

    @property
    def spec(self) -> NodeSpec: ...

    @property
    def name(self) -> str: ...

    def paths(self, instance: str) -> layout.InstancePaths: ...

    @property
    def lock_path(self) -> str:
        """The node lock file (see `reconciler.lock`)."""
        ...

    async def discover(self) -> ActualState:
        """The instances of this node (and the host's QEMU processes that are not ours)."""
        ...

    def live_pids(self, instance: str) -> tuple[int, ...]:
        """Live QEMU processes started with this node's pidfile for `instance` (ours or half-started)."""
        ...

    async def launch(self, instance: str, launch: Launch, timeout: float) -> launch_mod.Launched:
        """Write the launch's NIC files, start QEMU and wait until QMP answers (LaunchError otherwise)."""
        ...

    async def qmp(self, instance: str, timeout: float) -> qmp.QmpSession:
        """A session on the instance's control socket (QmpError on failure); the caller closes it."""
        ...

    def process(self, pid: int, create_time: float, argv: Sequence[str]) -> ProcessHandle | None:
        """A pinned handle on `pid` if it is still exactly that process; None when gone or not ours."""
        ...

    def qemu_version(self) -> str: ...

    def port_free(self, port: int) -> bool:
        """Whether a migration listener could bind `port` on the node's address right now."""
        ...

    def read_record(self, instance: str) -> AppliedRecord | None: ...

    def write_record(self, record: AppliedRecord) -> None: ...

    def read_intent(self, instance: str) -> object | None:
        """The decoded intent.json (plain JSON data), None when absent."""
        ...

    def write_intent(self, instance: str, data: object) -> None: ...

    def remove_intent(self, instance: str) -> None: ...

    def clean_runtime_files(self, instance: str) -> None:
        """Remove pidfile, sockets, NIC files and intent; keep the record and the serial log."""
        ...

    def remove_instance(self, instance: str) -> None:
        """Remove every file of ours for the instance, the record included (never disk images)."""
        ...


class LocalNode:
    """A node whose state directory is on this machine."""

    def __init__(self, spec: NodeSpec) -> None:
        self._spec = spec

    @property
    def spec(self) -> NodeSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    def paths(self, instance: str) -> layout.InstancePaths:
        return layout.instance_paths(self._spec, instance)

    @property
    def lock_path(self) -> str:
        statedir.ensure_dir(self._spec.state_dir)
        return layout.node_lock(self._spec)

    async def discover(self) -> ActualState:
        from reconciler import discovery

        return await discovery.discover_async([self._spec])

    def live_pids(self, instance: str) -> tuple[int, ...]:
        pidfile = self.paths(instance).pidfile
        return tuple(p.pid for p in procs.qemu_processes() if _has_pidfile(p.cmdline, pidfile))

    async def launch(self, instance: str, launch: Launch, timeout: float) -> launch_mod.Launched:
        paths = launch.paths
        statedir.ensure_dir(paths.dir)
        for nic in launch.nic_files:
            statedir.atomic_write(nic.path, nic.text.encode())
        return await launch_mod.launch(instance, launch.argv, paths, timeout, launch.env)

    async def qmp(self, instance: str, timeout: float) -> qmp.QmpSession:
        return await qmp.connect(self.paths(instance).qmp, timeout)

    def process(self, pid: int, create_time: float, argv: Sequence[str]) -> ProcessHandle | None:
        def verify(p: int) -> bool:
            return procs.check(p, create_time, argv).ours

        return ProcessHandle.open_verified(pid, verify)

    def qemu_version(self) -> str:
        return launch_mod.qemu_version(self._spec.qemu_binary, self._spec.state_dir)

    def port_free(self, port: int) -> bool:
        family = socket.AF_INET6 if ":" in self._spec.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((self._spec.address, port))
            except OSError as err:
                if err.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                raise
        return True

    def read_record(self, instance: str) -> AppliedRecord | None:
        return statedir.read_record(self.paths(instance))

    def write_record(self, record: AppliedRecord) -> None:
        statedir.write_record(self.paths(record.name), record)

    def read_intent(self, instance: str) -> object | None:
        return statedir.read_json(self.paths(instance).intent)

    def write_intent(self, instance: str, data: object) -> None:
        paths = self.paths(instance)
        statedir.ensure_dir(paths.dir)
        statedir.write_json(paths.intent, data)

    def remove_intent(self, instance: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths(instance).intent)

    def clean_runtime_files(self, instance: str) -> None:
        statedir.remove_runtime_files(self.paths(instance))

    def remove_instance(self, instance: str) -> None:
        statedir.remove_instance_files(self.paths(instance))


def _has_pidfile(cmdline: Sequence[str], pidfile: str) -> bool:
    return any(a == "-pidfile" and b == pidfile for a, b in itertools.pairwise(cmdline))


def local_nodes(specs: Sequence[NodeSpec]) -> dict[str, Node]:
    return {s.name: LocalNode(s) for s in specs}


def merge_states(states: Sequence[ActualState]) -> ActualState:
    """One ActualState from per-node discoveries; a process is unmanaged only if no node claims it."""
    instances = sorted((i for s in states for i in s.instances), key=lambda i: (i.name, i.node))
    ours = {i.pid for i in instances if i.pid is not None and i.state.has_process}
    unmanaged = {u.pid: u for s in states for u in s.unmanaged if u.pid not in ours}
    return ActualState(instances=tuple(instances), unmanaged=tuple(unmanaged[p] for p in sorted(unmanaged)))


async def discover_all(nodes: Sequence[Node]) -> ActualState:
    """Discover every node: local ones in one pass (one scan of the host's processes), others each alone."""
    import asyncio

    from reconciler import discovery

    local = [n.spec for n in nodes if isinstance(n, LocalNode)]
    others = [n for n in nodes if not isinstance(n, LocalNode)]
    states = await asyncio.gather(discovery.discover_async(local), *(n.discover() for n in others))
    return merge_states(states)


def live_copies(nodes: Sequence[Node], instance: str) -> list[tuple[str, int]]:
    """(node, pid) of every live QEMU of `instance` on `nodes`; local nodes share one process scan."""
    found: list[tuple[str, int]] = []
    local = [n for n in nodes if isinstance(n, LocalNode)]
    if local:
        pidfiles = {n.paths(instance).pidfile: n.name for n in local}
        for p in procs.qemu_processes():
            for a, b in itertools.pairwise(p.cmdline):
                if a == "-pidfile" and b in pidfiles:
                    found.append((pidfiles[b], p.pid))
    for n in nodes:
        if not isinstance(n, LocalNode):
            found += [(n.name, pid) for pid in n.live_pids(instance)]
    return found
