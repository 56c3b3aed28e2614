"""A node on a remote host: the `Node` operations as calls to that host's agent over its SSH link.

Every operation crosses the network, so every one is async and has a deadline; a connection lost in the
middle of one fails it (RemoteCallError) and nothing is guessed. QMP travels over the same connection: the
instance's control socket on the host is forwarded to a private local socket, so `qemu.qmp` and the
executor's event-driven waits work unchanged.

This is the remote half of the interface in `reconciler.node` (whose calls are async, so the executor
awaits either kind alike); the commands open links and build RemoteNodes in a later step (issue 12).
"""

from __future__ import annotations

import asyncio
import base64
import signal
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

from reconciler import layout, model, qmp, records
from reconciler.actual import ActualState
from reconciler.argv import Launch
from reconciler.hostfacts import HostFacts
from reconciler.launch import Launched
from reconciler.lock import Holder
from reconciler.model import NodeSpec
from reconciler.node import OnLockWait
from reconciler.pathinfo import PathInfo
from reconciler.procwatch import ExitSeen
from reconciler.provision.imagecheck import DiskRequest, ImageCheck, ImageQuery
from reconciler.provision.images import OwnedImage
from reconciler.qmp import QmpSession
from reconciler.records import AppliedRecord
from reconciler.remote.link import HostLink

CALL_TIMEOUT = 10.0  # a state-directory read or write on the host, round trip included
DISCOVER_TIMEOUT = 30.0
IMAGE_TIMEOUT = 60.0  # qemu-img on the host (inspecting bases, creating images), round trip included


class RemoteProcess:
    """A pidfd held by the host's agent on a verified process: signals and waits happen there."""

    def __init__(self, link: HostLink, handle: int, pid: int) -> None:
        self._link = link
        self._handle = handle
        self.pid = pid  # the host's PID, for messages only: it is never sent back to be signalled

    async def send_signal(self, sig: signal.Signals) -> bool:
        result = await self._link.call("process_signal", {"handle": self._handle, "signal": int(sig)},
                                       timeout=CALL_TIMEOUT)
        return bool(result)

    async def wait_exit(self, timeout: float) -> bool:
        result = await self._link.call("process_wait", {"handle": self._handle, "timeout": timeout},
                                       timeout=timeout + CALL_TIMEOUT)
        return bool(result)

    async def exited(self) -> bool:
        return await self.wait_exit(0)

    async def close(self) -> None:
        if self._link.alive:
            await self._link.call("process_close", {"handle": self._handle}, timeout=CALL_TIMEOUT)

    async def __aenter__(self) -> RemoteProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RemoteNode:
    """A node whose state directory and processes are on the host at the other end of `link`."""

    def __init__(self, spec: NodeSpec, link: HostLink) -> None:
        self._spec = spec
        self._link = link
        self._wire_spec = model.to_jsonable(spec)
        self._forwards: dict[str, asyncio.Future[str]] = {}  # remote socket path -> its local forward

    @property
    def spec(self) -> NodeSpec:
        return self._spec

    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def reachable(self) -> bool:
        return self._link.alive

    def paths(self, instance: str) -> layout.InstancePaths:
        return layout.instance_paths(self._spec, instance)  # paths on the host, computed alike here

    async def _call(self, method: str, deadline: float = CALL_TIMEOUT, **params: Any) -> Any:
        return await self._link.call(method, {"node": self._wire_spec, **params}, timeout=deadline)

    async def discover(self) -> ActualState:
        state: ActualState = records.decode_as(ActualState, await self._call("discover", DISCOVER_TIMEOUT),
                                               "discover")
        machine = self._spec.machine  # the agent calls its own host "local"
        return replace(state, unmanaged=tuple(replace(u, machine=machine) for u in state.unmanaged))

    async def discover_instances(self, names: Collection[str]) -> ActualState:
        state: ActualState = records.decode_as(
            ActualState, await self._call("discover_instances", DISCOVER_TIMEOUT, instances=sorted(names)),
            "discover_instances")
        return state

    async def live_pids(self, instance: str) -> tuple[int, ...]:
        return tuple(int(p) for p in await self._call("live_pids", instance=instance))

    async def launch(self, instance: str, launch: Launch, timeout: float) -> Launched:
        raw = await self._call("launch", timeout + CALL_TIMEOUT, instance=instance,
                               launch=model.to_jsonable(launch), timeout=timeout)
        launched: Launched = records.decode_as(Launched, raw, "launch")
        return launched

    async def qmp(self, instance: str, timeout: float, *, patient: bool = False,
                  plain: bool = False) -> qmp.QmpSession:
        local = await self._forward(self.paths(instance).qmp)
        session: qmp.QmpSession = (await qmp.connect_plain(local, timeout) if plain
                                   else await qmp.connect(local, timeout, patient=patient))
        await qmp.expect_name(session, instance, timeout)  # a forward is a path of ours, checked anyway
        return session

    async def serial_socket(self, instance: str) -> str:
        return await self._forward(self.paths(instance).serial)

    async def _forward(self, remote: str) -> str:
        """One forward per remote socket, made once even when several calls ask at the same moment."""
        made = self._forwards.get(remote)
        if made is None:
            made = self._forwards[remote] = asyncio.ensure_future(self._link.forward_unix(remote))
        try:
            return await asyncio.shield(made)
        except BaseException:
            if made.done() and (made.cancelled() or made.exception() is not None):
                self._forwards.pop(remote, None)  # a failed forward is made afresh by the next call
            raise

    # --- for the watch daemon: what happens on the host, pushed as it happens -----------------------

    async def qmp_watch(self, instance: str, timeout: float) -> QmpSession:
        """A session on the instance's watcher socket (qmp-watch.sock), forwarded over the link."""
        session = await qmp.connect(await self._forward(self.paths(instance).qmp_watch), timeout,
                                    name="reconciler-watch")
        await qmp.expect_name(session, instance, timeout)
        return session

    async def watch_exit(self, pid: int, started_at: float | None, pidfile: str | None,
                         timeout: float) -> ExitSeen:
        """Wait up to `timeout` s for the host's process `pid` to exit: the agent watches it with a pidfd
        there and answers the moment it exits (no polling from here); RemoteCallError if the link fails."""
        raw = await self._link.call("process_watch", {"pid": pid, "started_at": started_at,
                                                      "pidfile": pidfile, "timeout": timeout},
                                    timeout=timeout + CALL_TIMEOUT)
        seen: ExitSeen = records.decode_as(ExitSeen, raw, "process_watch")
        return seen

    async def check_paths(self, paths: Collection[str]) -> Mapping[str, PathInfo]:
        raw = await self._call("check_paths", paths=sorted(set(paths)))
        return {str(p): records.decode_as(PathInfo, info, p) for p, info in raw.items()}

    async def check_images(self, queries: Sequence[ImageQuery]) -> Mapping[str, ImageCheck]:
        raw = await self._call("check_images", IMAGE_TIMEOUT, queries=model.to_jsonable(tuple(queries)))
        return {str(p): records.decode_as(ImageCheck, a, p) for p, a in raw.items()}

    async def create_disk(self, instance: str, disk: DiskRequest) -> bool:
        return bool(await self._call("create_disk", IMAGE_TIMEOUT, instance=instance,
                                     disk=model.to_jsonable(disk)))

    async def grow_disk(self, disk: DiskRequest) -> None:
        await self._call("grow_disk", IMAGE_TIMEOUT, disk=model.to_jsonable(disk))

    async def owned_images(self, paths: Collection[str]) -> Mapping[str, OwnedImage]:
        raw = await self._call("owned_images", paths=sorted(set(paths)))
        return {str(p): records.decode_as(OwnedImage, o, p) for p, o in raw.items()}

    async def guest_agent(self, instance: str, command: str, timeout: float) -> object:
        result: object = await self._call("guest_agent", timeout + CALL_TIMEOUT, instance=instance,
                                          command=command, timeout=timeout)
        return result

    async def delete_disk(self, path: str) -> bool:
        return bool(await self._call("delete_disk", path=path))

    async def read_secret(self, path: str, field: str) -> str:
        return str(await self._call("read_secret", path=path, field=field))

    async def process(self, pid: int, create_time: float, argv: Sequence[str]) -> RemoteProcess | None:
        handle = await self._call("process_open", pid=pid, create_time=create_time, argv=list(argv))
        return None if handle is None else RemoteProcess(self._link, int(handle), pid)

    async def qemu_version(self) -> str:
        params = {"binary": self._spec.qemu_binary, "state_dir": self._spec.state_dir}
        return str(await self._link.call("qemu_version", params, timeout=CALL_TIMEOUT))

    async def facts(self) -> HostFacts:
        facts: HostFacts = records.decode_as(HostFacts, await self._call("facts"), "facts")
        return facts

    async def port_free(self, port: int) -> bool:
        return bool(await self._call("port_free", port=port))

    async def read_nvram(self, instance: str) -> bytes | None:
        text = await self._call("read_nvram", instance=instance)
        return None if text is None else base64.b64decode(text)

    async def write_nvram(self, instance: str, data: bytes) -> None:
        await self._call("write_nvram", instance=instance, data=base64.b64encode(data).decode())

    async def read_record(self, instance: str) -> AppliedRecord | None:
        text = await self._call("read_record", instance=instance)
        return None if text is None else records.from_json(text)

    async def write_record(self, record: AppliedRecord) -> None:
        await self._call("write_record", record=records.to_json(record))

    async def read_intent(self, instance: str) -> object | None:
        result: object | None = await self._call("read_intent", instance=instance)
        return result

    async def write_intent(self, instance: str, data: object) -> None:
        await self._call("write_intent", instance=instance, data=data)

    async def remove_intent(self, instance: str) -> None:
        await self._call("remove_intent", instance=instance)

    async def clean_runtime_files(self, instance: str) -> None:
        await self._call("clean_runtime_files", instance=instance)

    async def remove_instance(self, instance: str) -> None:
        await self._call("remove_instance", instance=instance)

    async def write_nic_file(self, instance: str, ifname: str, text: str) -> None:
        await self._call("write_nic_file", instance=instance, ifname=ifname, text=text)

    async def lock(self, operation: str, timeout: float | None,
                   on_wait: OnLockWait | None = None) -> RemoteLock:
        """Take the node lock on the host (held by the agent until released or the connection ends).

        The agent tries once at once; if another run holds it, `on_wait` is told who, then it waits."""
        path = layout.node_lock(self._spec)
        if timeout != 0:
            first = await self._call("lock_acquire", CALL_TIMEOUT, operation=operation, timeout=0,
                                     quiet=True, witness=True)
            if first is not None:
                return RemoteLock.of(self._link, first)
            if on_wait is not None:
                holder = await self._call("lock_holder")
                on_wait(path, None if holder is None else records.decode_as(Holder, holder, "lock_holder"))
        deadline = (timeout if timeout is not None else 24 * 3600.0) + CALL_TIMEOUT
        return RemoteLock.of(self._link, await self._call("lock_acquire", deadline, operation=operation,
                                                          timeout=timeout, witness=True))


class RemoteLock:
    """A node lock the host's agent holds for this link."""

    def __init__(self, link: HostLink, ident: int, undisturbed: bool = False) -> None:
        self._link = link
        self._ident = ident
        self._undisturbed = undisturbed

    @classmethod
    def of(cls, link: HostLink, answer: Any) -> RemoteLock:
        """From lock_acquire's answer: [lock, undisturbed] when asked with `witness`; a bare lock number
        from an agent that does not know that (never taken as undisturbed)."""
        if isinstance(answer, list) and len(answer) == 2:
            return cls(link, int(answer[0]), answer[1] is True)
        return cls(link, int(answer))

    @property
    def undisturbed(self) -> bool:
        return self._undisturbed

    async def release(self) -> None:
        """RemoteCallError if the link is lost (the agent's end drops the lock then, when it ends)."""
        await self._link.call("lock_release", {"lock": self._ident}, timeout=CALL_TIMEOUT)
