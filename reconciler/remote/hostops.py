"""What the agent does on its host: the `LocalNode` operations, reached by name with JSON parameters.

Why here and not in the controller: process identity checks, pidfds, signals and flocks only mean
something on the host that holds the processes and files. The controller names a process by the PID,
start time and argv it recorded; the agent pins it with a pidfd, verifies it there, and hands back a
handle number for later signals and waits. Handles and locks belong to the connection: when it ends
(the agent's stdin closes), the agent ends, the pidfds close and the kernel drops the flocks.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from reconciler import intent as intents
from reconciler import lock as lock_mod
from reconciler import model, procwatch, records
from reconciler.argv import Launch
from reconciler.node import LocalNode, Process
from reconciler.provision.imagecheck import DiskRequest, ImageQuery

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


_IFNAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}")  # Linux's rule, without a '/' or a leading '.'


class BadParams(ValueError):
    """A request's parameters do not decode: the message names the parameter."""


def _param(params: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = params.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadParams(f"{key}: expected {getattr(kind, '__name__', kind)}")
    return value


def _decode(tp: Any, params: dict[str, Any], key: str) -> Any:
    try:
        return records.decode_as(tp, params.get(key), key)
    except records.DecodeError as err:
        raise BadParams(str(err)) from None


class HostOps:
    """One agent's state: the nodes it serves, its open process handles and held locks."""

    def __init__(self) -> None:
        self._nodes: dict[str, LocalNode] = {}
        self._handles: dict[int, Process] = {}
        self._locks: dict[int, lock_mod.NodeLock] = {}
        self._ids = itertools.count(1)

    def handlers(self) -> dict[str, Handler]:
        return {
            **self._provision_handlers(),
            "discover": self.discover, "discover_instances": self.discover_instances,
            "live_pids": self.live_pids, "launch": self.launch,
            "process_open": self.process_open, "process_signal": self.process_signal,
            "process_wait": self.process_wait, "process_close": self.process_close,
            "port_free": self.port_free, "check_paths": self.check_paths, "read_secret": self.read_secret,
            "read_record": self.read_record, "write_record": self.write_record,
            "read_intent": self.read_intent, "write_intent": self.write_intent,
            "remove_intent": self.remove_intent, "clean_runtime_files": self.clean_runtime_files,
            "remove_instance": self.remove_instance, "lock_acquire": self.lock_acquire,
            "lock_holder": self.lock_holder, "facts": self.facts,
            "read_nvram": self.read_nvram, "write_nvram": self.write_nvram,
            "lock_release": self.lock_release, "process_watch": self.process_watch,
            "write_nic_file": self.write_nic_file,
        }

    async def close(self) -> None:
        for handle in self._handles.values():
            await handle.close()
        for held in self._locks.values():
            held.release()

    def _node(self, params: dict[str, Any]) -> LocalNode:
        spec: model.NodeSpec = _decode(model.NodeSpec, params, "node")
        node = self._nodes.get(spec.name)
        if node is None or node.spec != spec:
            node = self._nodes[spec.name] = LocalNode(spec)
        return node

    # --- discovery and processes ------------------------------------------------------------------

    async def discover(self, params: dict[str, Any]) -> Any:
        return model.to_jsonable(await self._node(params).discover())

    async def discover_instances(self, params: dict[str, Any]) -> Any:
        names = params.get("instances")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadParams("instances: expected a list of names")
        return model.to_jsonable(await self._node(params).discover_instances(names))

    async def live_pids(self, params: dict[str, Any]) -> Any:
        return list(await self._node(params).live_pids(_param(params, "instance", str)))

    async def launch(self, params: dict[str, Any]) -> Any:
        node = self._node(params)
        spec: Launch = _decode(Launch, params, "launch")
        timeout = float(_param(params, "timeout", (int, float)))
        return model.to_jsonable(await node.launch(_param(params, "instance", str), spec, timeout))

    async def process_open(self, params: dict[str, Any]) -> Any:
        node = self._node(params)
        argv = _param(params, "argv", list)
        created = float(_param(params, "create_time", (int, float)))
        handle = await node.process(_param(params, "pid", int), created, [str(a) for a in argv])
        if handle is None:
            return None
        ident = next(self._ids)
        self._handles[ident] = handle
        return ident

    def _handle(self, params: dict[str, Any]) -> Process:
        handle = self._handles.get(_param(params, "handle", int))
        if handle is None:
            raise BadParams("handle: not open")
        return handle

    async def process_signal(self, params: dict[str, Any]) -> Any:
        try:
            sig = signal.Signals(_param(params, "signal", int))
        except ValueError:
            raise BadParams("signal: not a signal number") from None
        return await self._handle(params).send_signal(sig)

    async def process_wait(self, params: dict[str, Any]) -> Any:
        return await self._handle(params).wait_exit(float(_param(params, "timeout", (int, float))))

    async def process_close(self, params: dict[str, Any]) -> Any:
        handle = self._handles.pop(_param(params, "handle", int), None)
        if handle is not None:
            await handle.close()
        return None

    async def process_watch(self, params: dict[str, Any]) -> Any:
        """Wait on the host for a process's exit (a pidfd here), answering the moment it exits: the exit
        is pushed to the controller as it happens, with the pidfile's evidence looked at right then."""
        started = params.get("started_at")
        pidfile = params.get("pidfile")
        if started is not None and not isinstance(started, int | float):
            raise BadParams("started_at: expected a number or null")
        if pidfile is not None and not isinstance(pidfile, str):
            raise BadParams("pidfile: expected a string or null")
        seen = await procwatch.watch_exit(_param(params, "pid", int), started, pidfile,
                                          float(_param(params, "timeout", (int, float))))
        return model.to_jsonable(seen)

    async def check_paths(self, params: dict[str, Any]) -> Any:
        paths = [str(p) for p in _param(params, "paths", list)]
        answers = await self._node(params).check_paths(paths)
        return {p: model.to_jsonable(info) for p, info in answers.items()}

    async def read_nvram(self, params: dict[str, Any]) -> Any:
        data = await self._node(params).read_nvram(_param(params, "instance", str))
        return None if data is None else base64.b64encode(data).decode()

    async def write_nvram(self, params: dict[str, Any]) -> Any:
        try:
            data = base64.b64decode(_param(params, "data", str), validate=True)
        except ValueError:
            raise BadParams("data: expected base64") from None
        await self._node(params).write_nvram(_param(params, "instance", str), data)
        return None

    async def read_secret(self, params: dict[str, Any]) -> Any:
        return await self._node(params).read_secret(_param(params, "path", str), _param(params, "field", str))

    async def port_free(self, params: dict[str, Any]) -> Any:
        return await self._node(params).port_free(_param(params, "port", int))

    # --- disk images the reconciler creates, the guest agent (issue 14) ---------------------------

    def _provision_handlers(self) -> dict[str, Handler]:
        return {"check_images": self.check_images, "create_disk": self.create_disk,
                "owned_images": self.owned_images, "delete_disk": self.delete_disk,
                "grow_disk": self.grow_disk, "guest_agent": self.guest_agent}

    async def check_images(self, params: dict[str, Any]) -> Any:
        queries: tuple[ImageQuery, ...] = _decode(tuple[ImageQuery, ...], params, "queries")
        answers = await self._node(params).check_images(queries)
        return {p: model.to_jsonable(a) for p, a in answers.items()}

    async def create_disk(self, params: dict[str, Any]) -> Any:
        disk: DiskRequest = _decode(DiskRequest, params, "disk")
        return await self._node(params).create_disk(_param(params, "instance", str), disk)

    async def grow_disk(self, params: dict[str, Any]) -> Any:
        disk: DiskRequest = _decode(DiskRequest, params, "disk")
        await self._node(params).grow_disk(disk)
        return None

    async def owned_images(self, params: dict[str, Any]) -> Any:
        paths = [str(p) for p in _param(params, "paths", list)]
        return {p: model.to_jsonable(o) for p, o in (await self._node(params).owned_images(paths)).items()}

    async def guest_agent(self, params: dict[str, Any]) -> Any:
        timeout = float(_param(params, "timeout", (int, float)))
        return await self._node(params).guest_agent(_param(params, "instance", str),
                                                    _param(params, "command", str), timeout)

    async def delete_disk(self, params: dict[str, Any]) -> Any:
        return await self._node(params).delete_disk(_param(params, "path", str))

    # --- files of the state directory -------------------------------------------------------------

    async def read_record(self, params: dict[str, Any]) -> Any:
        record = await self._node(params).read_record(_param(params, "instance", str))
        return None if record is None else records.to_json(record)

    async def write_record(self, params: dict[str, Any]) -> Any:
        try:
            record = records.from_json(_param(params, "record", str))
        except records.DecodeError as err:
            raise BadParams(f"record: {err}") from None
        await self._node(params).write_record(record)
        return None

    async def read_intent(self, params: dict[str, Any]) -> Any:
        return await self._node(params).read_intent(_param(params, "instance", str))

    async def write_intent(self, params: dict[str, Any]) -> Any:
        data = params.get("data")
        if isinstance(data, dict) and "owner_pid" in data:
            # The writer, as this host sees it, is this agent: it lives exactly as long as the controller's
            # connection, and its PID means something here (the controller's PID is of another machine).
            # A discovery on this host then takes the intent as in flight while the controller is
            # connected, and as left behind once it is gone.
            pid, create_time = intents.owner_identity()
            data = {**data, "owner_pid": pid, "owner_create_time": create_time}
        await self._node(params).write_intent(_param(params, "instance", str), data)
        return None

    async def remove_intent(self, params: dict[str, Any]) -> Any:
        await self._node(params).remove_intent(_param(params, "instance", str))
        return None

    async def clean_runtime_files(self, params: dict[str, Any]) -> Any:
        await self._node(params).clean_runtime_files(_param(params, "instance", str))
        return None

    async def remove_instance(self, params: dict[str, Any]) -> Any:
        await self._node(params).remove_instance(_param(params, "instance", str))
        return None

    async def write_nic_file(self, params: dict[str, Any]) -> Any:
        ifname = _param(params, "ifname", str)
        if not _IFNAME.fullmatch(ifname):
            raise BadParams(f"ifname: {ifname!r} is not an interface name")
        await self._node(params).write_nic_file(_param(params, "instance", str), ifname,
                                                _param(params, "text", str))
        return None

    # --- the node lock, held by this agent for its controller -------------------------------------

    async def lock_acquire(self, params: dict[str, Any]) -> Any:
        node = self._node(params)
        held = lock_mod.NodeLock(node.lock_path, _param(params, "operation", str))
        timeout = params.get("timeout")
        if timeout is not None and not isinstance(timeout, int | float):
            raise BadParams("timeout: expected a number or null")
        try:
            await asyncio.to_thread(held.acquire, timeout)
        except lock_mod.LockTimeout:
            if params.get("quiet") is True:  # a first try: the controller asks who holds it, then waits
                return None
            raise
        ident = next(self._ids)
        self._locks[ident] = held
        return [ident, held.undisturbed] if params.get("witness") is True else ident

    async def facts(self, params: dict[str, Any]) -> Any:
        return model.to_jsonable(await self._node(params).facts())

    async def lock_holder(self, params: dict[str, Any]) -> Any:
        holder = lock_mod.read_holder(self._node(params).lock_path)
        return None if holder is None else model.to_jsonable(holder)

    async def lock_release(self, params: dict[str, Any]) -> Any:
        held = self._locks.pop(_param(params, "lock", int), None)
        if held is not None:
            held.release()
        return None
