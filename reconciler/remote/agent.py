"""The far side of a remote node: `reconciler agent`, started by the controller over SSH.

It speaks `protocol` on its stdin/stdout and does the host's work on the host itself: process identity
checks and signals go through a pidfd here, never by a PID sent from afar. Requests run concurrently
(each its own task), so a slow QMP query does not hold up a record read. When stdin closes (the SSH
connection went away), or the controller's heartbeat stops (a link that died without a word), the agent
finishes what it was asked and ends; it never acts on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

from reconciler import __version__
from reconciler.errors import ReconcilerError
from reconciler.remote import protocol as p
from reconciler.remote.hostops import BadParams, Handler, HostOps


async def _ping(params: dict[str, Any]) -> Any:
    return {"pid": os.getpid(), "version": __version__}


async def _qemu_version(params: dict[str, Any]) -> Any:
    from reconciler import launch

    binary, state_dir = params.get("binary"), params.get("state_dir")
    if not isinstance(binary, str):
        raise BadParams("binary: expected a string")
    if state_dir is not None and not isinstance(state_dir, str):
        raise BadParams("state_dir: expected a string or null")
    # With the node's state directory, the version is cached there across runs (as for a local node):
    # each run starts a new agent, which would otherwise start QEMU once to ask.
    return await asyncio.to_thread(launch.qemu_version, binary, state_dir)


# Requests that only wait for something to happen on the host (a watched process's exit): when the
# controller goes away there is nobody to tell, so they end with the connection instead of being let finish.
WAITS_ONLY = frozenset({"process_watch"})

HANDLERS: dict[str, Handler] = {
    "ping": _ping,
    "qemu_version": _qemu_version,
}


async def handle(request: p.Request, handlers: dict[str, Handler] = HANDLERS) -> p.Response:
    """One request to one response; every failure becomes a Fault, never a dead agent."""
    handler = handlers.get(request.method)
    if handler is None:
        return p.Response(request.id, fault=p.Fault(p.FaultKind.UNKNOWN_METHOD, request.method))
    try:
        return p.Response(request.id, result=await handler(request.params))
    except BadParams as err:
        return p.Response(request.id, fault=p.Fault(p.FaultKind.BAD_PARAMS, f"{request.method}: {err}"))
    except ReconcilerError as err:
        return p.Response(request.id, fault=p.Fault(p.FaultKind.FAILED, str(err)))
    except Exception as err:  # a bug here must not end the agent: report it, keep serving
        return p.Response(request.id, fault=p.Fault(p.FaultKind.INTERNAL,
                                                     f"{request.method}: {type(err).__name__}: {err}"))


async def serve(reader: asyncio.StreamReader, write: Callable[[bytes], None],
                handlers: dict[str, Handler], silence: float = p.SILENCE) -> None:
    """Say hello, then answer requests until `reader` ends, or says nothing for `silence` seconds (the
    controller pings every p.HEARTBEAT s: a silent one is gone, even when TCP has not noticed yet)."""
    write(p.encode(p.Hello(p.PROTOCOL, __version__, platform.python_version())))
    tasks: set[asyncio.Task[None]] = set()
    waits: set[asyncio.Task[None]] = set()

    async def answer(request: p.Request) -> None:
        write(p.encode(await handle(request, handlers)))

    try:
        while True:
            try:
                async with asyncio.timeout(silence):
                    line = await reader.readline()
            except TimeoutError:
                break
            if not line:
                break
            try:
                frame = p.decode(line)
            except p.ProtocolError:
                continue  # nothing to answer to: the controller's deadline reports it
            if isinstance(frame, p.Request):
                task = asyncio.create_task(answer(frame))
                group = waits if frame.method in WAITS_ONLY else tasks
                group.add(task)
                task.add_done_callback(group.discard)
    finally:
        for task in list(waits):
            task.cancel()
        # The controller went away (or is done): let what it asked for finish, each under its own
        # deadline -- a launch cut off mid-daemonize could leave a QEMU behind that nobody records.
        await asyncio.gather(*tasks, *waits, return_exceptions=True)


async def _main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=p.MAX_FRAME)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = os.fdopen(sys.stdout.fileno(), "wb", buffering=0, closefd=False)

    def write(data: bytes) -> None:  # one write per frame, from the loop's thread: never interleaved
        with contextlib.suppress(BrokenPipeError):
            out.write(data)

    ops = HostOps()
    try:
        await serve(reader, write, {**HANDLERS, **ops.handlers()})
    finally:
        await ops.close()


def main() -> int:
    asyncio.run(_main())
    return 0
