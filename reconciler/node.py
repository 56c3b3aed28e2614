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
import stat
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from reconciler import cmdpath, layout, procs, statedir
from reconciler.actual import ActualState
from reconciler.errors import NodeAddressError, QmpError, RemoteCallError
from reconciler.model import NodeSpec
from reconciler.pathinfo import MISSING, PathInfo, PathKind

if TYPE_CHECKING:  # imported where used: `plan` and `status` need none of them (nor their imports)
    import signal

    from reconciler import launch as launch_mod
    from reconciler import lock as lock_mod
    from reconciler import qmp
    from reconciler.argv import Launch
    from reconciler.hostfacts import HostFacts
    from reconciler.pidfd import ProcessHandle
    from reconciler.provision.imagecheck import DiskRequest, ImageCheck, ImageQuery
    from reconciler.provision.images import OwnedImage
    from reconciler.records import AppliedRecord


class Process(Protocol):
    """A verified process pinned on its node (a pidfd there): what the executor signals and waits on."""

    @property
    def pid(self) -> int:
        """The node's PID, for messages only."""
        ...

    async def exited(self) -> bool: ...

    async def send_signal(self, sig: signal.Signals) -> bool:
        """Signal the pinned process; False if it has already exited."""
        ...

    async def wait_exit(self, timeout: float) -> bool:
        """True if the process exited within `timeout` seconds."""
        ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Process: ...

    async def __aexit__(self, *exc: object) -> None: ...


class LocalProcess:
    """A pidfd of this machine, as a `Process`."""

    def __init__(self, handle: ProcessHandle) -> None:
        self._handle = handle

    @property
    def pid(self) -> int:
        return self._handle.pid

    async def exited(self) -> bool:
        return self._handle.exited()

    async def send_signal(self, sig: signal.Signals) -> bool:
        return self._handle.send_signal(sig)

    async def wait_exit(self, timeout: float) -> bool:
        return await self._handle.wait_exit(timeout)

    async def close(self) -> None:
        self._handle.close()

    async def __aenter__(self) -> LocalProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._handle.close()


class HeldLock(Protocol):
    """A node lock taken on the node (reconciler.lock there); released by `release` or when the run ends."""

    async def release(self) -> None: ...

    @property
    def undisturbed(self) -> bool:
        """Nobody else has held this lock since this process (on the node: its agent) last released it
        (reconciler.lock); False the first time. The watch daemon trusts what it knows only then."""
        ...


OnLockWait = Callable[[str, "lock_mod.Holder | None"], None]  # (lock file, who holds it)


class Node(Protocol):
    """One host (or one state directory on a host) that runs instances."""

    @property
    def spec(self) -> NodeSpec: ...

    @property
    def name(self) -> str: ...

    @property
    def reachable(self) -> bool:
        """False once a remote node's link is lost (its calls then fail at once)."""
        ...

    def paths(self, instance: str) -> layout.InstancePaths: ...

    async def lock(self, operation: str, timeout: float | None,
                   on_wait: OnLockWait | None = None) -> HeldLock:
        """Take the node lock on the node: wait up to `timeout` s (None: forever; 0: not at all), calling
        `on_wait` first when another run holds it; LockTimeout when it stays held."""
        ...

    async def discover(self) -> ActualState:
        """The instances of this node (and the host's QEMU processes that are not ours)."""
        ...

    async def discover_instances(self, names: Collection[str]) -> ActualState:
        """Only the named instances of this node, looked at as `discover` does (absent: no directory);
        no scan of the host's processes, so `unmanaged` is empty. The watch daemon's incremental pass."""
        ...

    async def live_pids(self, instance: str) -> tuple[int, ...]:
        """Live QEMU processes started with this node's pidfile for `instance` (ours or half-started)."""
        ...

    async def launch(self, instance: str, launch: Launch, timeout: float) -> launch_mod.Launched:
        """Write the launch's NIC files, start QEMU and wait until QMP answers (LaunchError otherwise)."""
        ...

    async def qmp(self, instance: str, timeout: float, *, patient: bool = False,
                  plain: bool = False) -> qmp.QmpSession:
        """A session on the instance's control socket (QmpError on failure); the caller closes it.
        `patient`: wait (within `timeout`) for a monitor slow to accept (see qmp.connect). `plain`: a
        qmp.PlainSession, for a conversation of a command or two (never patient)."""
        ...

    async def serial_socket(self, instance: str) -> str:
        """A unix socket path on this machine that reaches the instance's serial console (the console
        command connects to it; a remote node forwards the host's socket over its SSH link)."""
        ...

    async def process(self, pid: int, create_time: float, argv: Sequence[str]) -> Process | None:
        """A pinned handle on `pid` if it is still exactly that process; None when gone or not ours.
        The handle lives on the node: its signals and waits happen there, never by a PID sent from afar."""
        ...

    async def qemu_version(self) -> str: ...

    async def facts(self) -> HostFacts:
        """The host's memory, CPUs, load, QEMU binary and KVM (for node-info)."""
        ...

    async def check_paths(self, paths: Collection[str]) -> Mapping[str, PathInfo]:
        """What is at each path on the node (one stat each; a name without `/` is looked up in PATH).

        One call per node and plan, so a remote node answers every path in one round trip."""
        ...

    async def port_free(self, port: int) -> bool:
        """Whether a migration listener could bind `port` on the node's address right now."""
        ...

    async def guest_agent(self, instance: str, command: str, timeout: float) -> object:
        """Run a qemu-guest-agent command on the instance's agent socket (GuestAgentError otherwise)."""
        ...

    async def check_images(self, queries: Sequence[ImageQuery]) -> Mapping[str, ImageCheck]:
        """For each disk the plan would create (path -> answer): its directory, its base image (opened
        read-only) and the free space there. One call per node and plan, only for disks to create."""
        ...

    async def create_disk(self, instance: str, disk: DiskRequest) -> bool:
        """Create `disk` (a provisioned one) if its file is missing, recorded as owned; False when a file
        was already there (used as it is, never ours). ImageError naming the file otherwise."""
        ...

    async def grow_disk(self, disk: DiskRequest) -> None:
        """Grow a disk no process uses to its declared size (qemu-img resize; never a shrink); only an image
        the reconciler created (a file that already existed is never written outside of QEMU)."""
        ...

    async def owned_images(self, paths: Collection[str]) -> Mapping[str, OwnedImage]:
        """The images among `paths` the reconciler created (their ownership records)."""
        ...

    async def delete_disk(self, path: str) -> bool:
        """Delete an image only if the reconciler created that very file (False: not ours, untouched);
        ImageError when something else now sits at the path."""
        ...

    async def read_secret(self, path: str, field: str) -> str:
        """A secret file on the node (vnc.passwordFile): SecretFileError naming `field` when unfit."""
        ...

    async def read_nvram(self, instance: str) -> bytes | None:
        """The instance's UEFI variable store (firmware uefi), None when it has none."""
        ...

    async def write_nvram(self, instance: str, data: bytes) -> None:
        """Replace the instance's UEFI variable store (a migration's target, before it launches)."""
        ...

    async def read_record(self, instance: str) -> AppliedRecord | None: ...

    async def write_record(self, record: AppliedRecord) -> None: ...

    async def read_intent(self, instance: str) -> object | None:
        """The decoded intent.json (plain JSON data), None when absent."""
        ...

    async def write_intent(self, instance: str, data: object) -> None: ...

    async def remove_intent(self, instance: str) -> None: ...

    async def clean_runtime_files(self, instance: str) -> None:
        """Remove pidfile, sockets, NIC files and intent; keep the record and the serial log."""
        ...

    async def remove_instance(self, instance: str) -> None:
        """Remove every file of ours for the instance, the record included (never disk images)."""
        ...

    async def write_nic_file(self, instance: str, ifname: str, text: str) -> None:
        """Write a tap's hook file (reconciler.hooks.ifup) for a NIC added live, before its netdev_add."""
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

    @property
    def reachable(self) -> bool:
        return True

    def paths(self, instance: str) -> layout.InstancePaths:
        return layout.instance_paths(self._spec, instance)

    @property
    def lock_path(self) -> str:
        statedir.ensure_dir(self._spec.state_dir)
        return layout.node_lock(self._spec)

    async def lock(self, operation: str, timeout: float | None,
                   on_wait: OnLockWait | None = None) -> HeldLock:
        from reconciler import lock as lock_mod

        path = self.lock_path
        held = lock_mod.NodeLock(path, operation)
        if held.try_acquire():  # the usual case: free, taken at once on this thread
            return _LocalLock(held)

        def waiting(holder: lock_mod.Holder | None) -> None:
            if on_wait is not None:
                on_wait(path, holder)

        await _acquire_abandonable(held, timeout, waiting)
        return _LocalLock(held)

    async def discover(self) -> ActualState:
        from reconciler import discovery

        return await discovery.discover_async([self._spec])

    async def discover_instances(self, names: Collection[str]) -> ActualState:
        from reconciler import discovery

        return await discovery.discover_instances_async(self._spec, names)

    async def live_pids(self, instance: str) -> tuple[int, ...]:
        pidfile = self.paths(instance).pidfile
        return tuple(p.pid for p in procs.qemu_processes() if _has_pidfile(p.cmdline, pidfile))

    async def launch(self, instance: str, launch: Launch, timeout: float) -> launch_mod.Launched:
        paths = launch.paths
        statedir.ensure_dir(paths.dir)
        for nic in launch.nic_files:
            statedir.atomic_write(nic.path, nic.text.encode())
        if launch.nvram_template is not None:
            from reconciler.provision import nvram

            nvram.ensure(instance, paths.nvram, launch.nvram_template)
        if launch.seed is not None:
            from reconciler.provision import iso, seed

            iso.write_seed_iso(paths.seed, seed.build_seed(instance, launch.seed))
        from reconciler import launch as launch_mod

        launched = await launch_mod.launch(instance, launch.argv, paths, timeout, launch.env)
        with contextlib.suppress(FileNotFoundError):  # guestAgent: the socket QEMU made is ours alone
            os.chmod(paths.agent, 0o600)
        return launched

    async def qmp(self, instance: str, timeout: float, *, patient: bool = False,
                  plain: bool = False) -> qmp.QmpSession:
        from reconciler import qmp as qmp_mod

        path = self.paths(instance).qmp
        if plain:
            return await qmp_mod.connect_plain(path, timeout)
        return await qmp_mod.connect(path, timeout, patient=patient)

    async def write_nic_file(self, instance: str, ifname: str, text: str) -> None:
        statedir.atomic_write(self.paths(instance).nic_file(ifname), text.encode())

    async def serial_socket(self, instance: str) -> str:
        return self.paths(instance).serial

    async def process(self, pid: int, create_time: float, argv: Sequence[str]) -> Process | None:
        def verify(p: int) -> bool:
            return procs.check(p, create_time, argv).ours

        from reconciler.pidfd import ProcessHandle

        handle = ProcessHandle.open_verified(pid, verify)
        return None if handle is None else LocalProcess(handle)

    async def qemu_version(self) -> str:
        import asyncio

        from reconciler import launch as launch_mod

        return await asyncio.to_thread(launch_mod.qemu_version, self._spec.qemu_binary, self._spec.state_dir)

    async def facts(self) -> HostFacts:
        import asyncio

        from reconciler import hostfacts

        return await asyncio.to_thread(hostfacts.gather, self._spec.qemu_binary, self._spec.state_dir)

    async def check_paths(self, paths: Collection[str]) -> Mapping[str, PathInfo]:
        return {path: probe_path(path) for path in paths}

    async def port_free(self, port: int) -> bool:
        import socket

        family = socket.AF_INET6 if ":" in self._spec.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((self._spec.address, port))
            except OSError as err:
                if err.errno in (errno.EADDRINUSE, errno.EACCES):
                    return False
                if err.errno == errno.EADDRNOTAVAIL:
                    detail = err.strerror or str(err)
                    raise NodeAddressError(self._spec.name, self._spec.address, detail) from None
                raise
        return True

    async def read_secret(self, path: str, field: str) -> str:
        from reconciler import secretfile

        return secretfile.read_secret(path, field)

    async def guest_agent(self, instance: str, command: str, timeout: float) -> object:
        from reconciler import guestagent

        result: object = await guestagent.call(self.paths(instance).agent, command, timeout)
        return result

    async def check_images(self, queries: Sequence[ImageQuery]) -> Mapping[str, ImageCheck]:
        from reconciler.provision import images

        return await images.check_for_create(queries)

    async def create_disk(self, instance: str, disk: DiskRequest) -> bool:
        from reconciler.provision import images

        record = layout.owned_image_record(self._spec, disk.path)
        owned = await images.provision(record, instance, disk.path, base=disk.base, size=disk.size,
                                       fmt=images.ImageFormat(disk.format))
        return owned is not None

    async def grow_disk(self, disk: DiskRequest) -> None:
        from reconciler.provision import images

        if disk.size is not None:
            await images.grow_recorded(layout.owned_image_record(self._spec, disk.path), disk.path, disk.size,
                                       images.ImageFormat(disk.format))

    async def owned_images(self, paths: Collection[str]) -> Mapping[str, OwnedImage]:
        from reconciler.provision import images

        found = {p: images.read_owned(layout.owned_image_record(self._spec, p)) for p in sorted(set(paths))}
        return {p: o for p, o in found.items() if o is not None and o.path == p}

    async def delete_disk(self, path: str) -> bool:
        from reconciler.provision import images

        return images.delete_recorded(layout.owned_image_record(self._spec, path), path)

    async def read_nvram(self, instance: str) -> bytes | None:
        try:
            with open(self.paths(instance).nvram, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    async def write_nvram(self, instance: str, data: bytes) -> None:
        paths = self.paths(instance)
        statedir.ensure_dir(paths.dir)
        statedir.atomic_write(paths.nvram, data)

    async def read_record(self, instance: str) -> AppliedRecord | None:
        return statedir.read_record(self.paths(instance))

    async def write_record(self, record: AppliedRecord) -> None:
        statedir.write_record(self.paths(record.name), record)

    async def read_intent(self, instance: str) -> object | None:
        return statedir.read_json(self.paths(instance).intent)

    async def write_intent(self, instance: str, data: object) -> None:
        paths = self.paths(instance)
        statedir.ensure_dir(paths.dir)
        statedir.write_json(paths.intent, data)

    async def remove_intent(self, instance: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.paths(instance).intent)

    async def clean_runtime_files(self, instance: str) -> None:
        statedir.remove_runtime_files(self.paths(instance))

    async def remove_instance(self, instance: str) -> None:
        statedir.remove_instance_files(self.paths(instance))


async def _acquire_abandonable(held: lock_mod.NodeLock, timeout: float | None,
                               waiting: Callable[[lock_mod.Holder | None], None]) -> None:
    """`held.acquire` on a thread of its own (flock blocks); if the caller is cancelled meanwhile (a
    daemon shutting down), a lock the thread still gets is let go at once instead of held for ever."""
    import asyncio
    import threading

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(err: BaseException | None) -> None:
        if done.cancelled():
            if err is None:
                held.release()
        elif err is None:
            done.set_result(None)
        else:
            done.set_exception(err)

    def run() -> None:
        try:
            held.acquire(timeout, waiting)
        except BaseException as err:  # handed to the loop, raised there
            loop.call_soon_threadsafe(settle, err)
            return
        try:
            loop.call_soon_threadsafe(settle, None)
        except RuntimeError:  # the loop is closed: nobody is left to hold it
            held.release()

    threading.Thread(target=run, name="node-lock", daemon=True).start()
    await done


class _LocalLock:
    def __init__(self, held: lock_mod.NodeLock) -> None:
        self._held = held

    async def release(self) -> None:
        self._held.release()

    @property
    def undisturbed(self) -> bool:
        return self._held.undisturbed


def probe_path(path: str) -> PathInfo:
    """What is at `path` on this machine: one stat (and an access check for files with an x bit)."""
    if "/" not in path:
        found = cmdpath.which(path)  # what the launch runs (launch.py resolves the binary the same way)
        if found is None:
            return MISSING
        info = probe_path(found if "/" in found else f"./{found}")
        return PathInfo(info.kind, info.executable, found, info.error)
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    except OSError as err:
        return PathInfo(PathKind.ERROR, error=err.strerror or str(err))
    except ValueError:  # a NUL byte: validate refuses these, a saved plan could still carry one
        return PathInfo(PathKind.ERROR, error="the path contains a NUL character")
    if stat.S_ISREG(mode):
        return _EXECUTABLE if mode & 0o111 and os.access(path, os.X_OK) else _FILE
    if stat.S_ISDIR(mode):
        return _DIRECTORY
    return _BLOCK_DEVICE if stat.S_ISBLK(mode) else _OTHER


_FILE, _EXECUTABLE = PathInfo(PathKind.FILE), PathInfo(PathKind.FILE, executable=True)
_DIRECTORY, _BLOCK_DEVICE = PathInfo(PathKind.DIRECTORY), PathInfo(PathKind.BLOCK_DEVICE)
_OTHER = PathInfo(PathKind.OTHER)


def _has_pidfile(cmdline: Sequence[str], pidfile: str) -> bool:
    return any(a == "-pidfile" and b == pidfile for a, b in itertools.pairwise(cmdline))


def local_nodes(specs: Sequence[NodeSpec]) -> dict[str, Node]:
    return {s.name: LocalNode(s) for s in specs}


def merge_states(states: Sequence[ActualState], machines: Mapping[str, str] | None = None) -> ActualState:
    """One ActualState from per-node discoveries; a process is unmanaged only if no node of its machine
    claims it. `machines`: node name -> NodeSpec.machine (PIDs are per host); nodes not in it are local."""
    where = machines or {}
    instances = sorted((i for s in states for i in s.instances), key=lambda i: (i.name, i.node))
    ours = {(where.get(i.node, "local"), i.pid) for i in instances
            if i.pid is not None and i.state.has_process}
    unmanaged = {(u.machine, u.pid): u for s in states for u in s.unmanaged
                 if (u.machine, u.pid) not in ours}
    unreachable = {u.node: u for s in states for u in s.unreachable}
    return ActualState(instances=tuple(instances), unmanaged=tuple(unmanaged[k] for k in sorted(unmanaged)),
                       in_flight=tuple(f for s in states for f in s.in_flight),
                       unreachable=tuple(unreachable[n] for n in sorted(unreachable)))


async def discover_all(nodes: Sequence[Node]) -> ActualState:
    """Discover every node at once: local ones in one pass (one scan of this machine's processes), every
    other one on its own host. A failure on a remote host raises (see fleet.discover for the rule that
    turns it into an unreachable node)."""
    import asyncio

    from reconciler import discovery

    local = [n.spec for n in nodes if isinstance(n, LocalNode)]
    others = [n for n in nodes if not isinstance(n, LocalNode)]
    states = await asyncio.gather(discovery.discover_async(local), *(n.discover() for n in others))
    return merge_states(states, {n.name: n.spec.machine for n in nodes})


async def check_paths_all(
    nodes: Mapping[str, Node], queries: Mapping[str, Collection[str]]
) -> dict[str, Mapping[str, PathInfo]]:
    """`check_paths` of each node in `queries` (node name -> paths), all nodes at once. Local nodes share
    this machine, so a path asked of several of them is looked at once."""
    import asyncio

    local = [n for n in queries if isinstance(nodes[n], LocalNode)]
    others = [n for n in queries if not isinstance(nodes[n], LocalNode)]
    seen = {p: probe_path(p) for p in sorted({p for n in local for p in queries[n]})}
    answers: dict[str, Mapping[str, PathInfo]] = {n: {p: seen[p] for p in queries[n]} for n in local}
    remote = await asyncio.gather(*(nodes[n].check_paths(queries[n]) for n in others))
    answers.update(zip(others, remote, strict=True))
    return answers


async def ask_again(nodes: Mapping[str, Node], actual: ActualState, timeout: float) -> ActualState:
    """`actual` after asking every verified process whose monitor missed discovery's short deadline once
    more, all at once, each for up to `timeout` seconds.

    Discovery keeps `status` and the daemon quick with 0.5 s per query; a loaded host's QEMU can take
    longer. Before an apply plans, or judges a saved plan stale, a slow monitor gets the apply's own QMP
    deadline: only one that stays silent for that long is taken as unresponsive.
    """
    from reconciler import discovery

    slow = [i for i in actual.instances if i.qmp_unresponsive and i.node in nodes]
    if not slow:
        return actual
    import asyncio

    answers = await asyncio.gather(*(_query_status(nodes[i.node], i.name, timeout) for i in slow))
    again = {(i.name, i.node): discovery.asked_again(i, a) for i, a in zip(slow, answers, strict=True)}
    return replace(actual, instances=tuple(again.get((i.name, i.node), i) for i in actual.instances))


async def _query_status(node: Node, instance: str, timeout: float) -> str | QmpError:
    deadline = time.monotonic() + timeout
    try:
        session = await node.qmp(instance, timeout, patient=True)
        try:
            result = await session.execute("query-status", timeout=max(deadline - time.monotonic(), 0.001))
        finally:
            await session.close()
    except QmpError as err:
        return err
    if not isinstance(result, dict) or not isinstance(result.get("status"), str):
        return QmpError(session.socket_path, f"query-status: unexpected answer {result!r}")
    return str(result["status"])


async def live_copies(nodes: Sequence[Node], instance: str) -> list[tuple[str, int]]:
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
            try:
                found += [(n.name, pid) for pid in await n.live_pids(instance)]
            except RemoteCallError:
                if n.reachable:
                    raise
                # Its link died during this run. It was looked at under our lock at discovery, and its
                # agent keeps that lock until it hears nothing for a while; a run that could start a
                # copy there needs the locks we hold. The action goes on; the run reports the node.
    return found
