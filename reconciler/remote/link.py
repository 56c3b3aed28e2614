"""A link to one host's agent, whatever carries it: calls with deadlines, pushed events, a heartbeat.

Why its own module, without asyncssh: the agent's protocol is the same whether the channel is an SSH
session of this process (reconciler.remote.ssh) or a unix socket to a local link keeper that holds the
SSH connection for many runs (reconciler.remote.keeper). A CLI run that finds a live keeper never
imports asyncssh (~0.2-0.5 s).

A channel lost in the middle of a call fails that call (RemoteCallError): nothing is guessed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler import __version__
from reconciler.errors import RemoteAgentError, RemoteCallError
from reconciler.remote import protocol as p
from reconciler.values import Value

DEFAULT_AGENT = ("reconciler", "agent")


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class SshTarget(Value):
    """How to reach one node (a Node manifest's `ssh`, with defaults applied)."""

    node: str
    host: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None  # None: asyncssh's default key files in ~/.ssh
    known_hosts_file: str | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    agent_command: tuple[str, ...] = DEFAULT_AGENT
    persist: float = 0.0  # seconds a link keeper holds the connection after its last run; 0: no keeper

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class Channel(Protocol):
    """The agent's stdio, carried somehow. `readline` returns b"" at the end and raises
    ConnectionError when the carrier fails; `forward` gives a local socket path reaching a host path."""

    async def readline(self) -> bytes: ...

    def write(self, data: bytes) -> None: ...

    async def forward(self, remote_path: str) -> str: ...

    async def close(self) -> None: ...


def install_hint() -> str:
    return f"install it there with: pip install reconciler=={__version__}"


def check_hello(target: SshTarget, frame: p.Frame | None, line: bytes, command: str) -> p.Hello:
    """The agent's first frame, if it is a hello of our version and protocol; else RemoteAgentError."""
    def agent_error(detail: str) -> RemoteAgentError:
        return RemoteAgentError(target.node, target.where, detail)

    if not isinstance(frame, p.Hello):
        raise agent_error(f"`{command}` is not a reconciler agent (it said {line[:60]!r}); {install_hint()}")
    if frame.version != __version__ or frame.protocol != p.PROTOCOL:
        raise agent_error(f"reconciler {frame.version} (protocol {frame.protocol}) there, {__version__} "
                          f"(protocol {p.PROTOCOL}) here; {install_hint()}")
    return frame


class HostLink:
    """One open channel to a host's agent, which was started and said hello; `close()` ends both."""

    def __init__(self, target: SshTarget, channel: Channel, hello: p.Hello, *, kept: bool = False) -> None:
        self.target = target
        self.hello = hello
        self.kept = kept  # carried by a link keeper (one SSH connection shared by successive runs)
        self._channel = channel
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[p.Response]] = {}
        self._lost: str | None = None
        self.on_event: Callable[[p.Event], None] | None = None
        self._gone = asyncio.Event()  # set when the agent's channel ends (lost or closed)
        self._reader = asyncio.create_task(self._read(), name=f"agent-reader-{target.node}")
        self._heart = asyncio.create_task(self._heartbeat(), name=f"agent-heartbeat-{target.node}")

    # --- calls ------------------------------------------------------------------------------------

    async def call(self, method: str, params: dict[str, Any] | None = None, *, timeout: float) -> Any:
        """The agent's result for `method`, or RemoteCallError (deadline, lost connection, fault)."""
        if self._lost is not None:
            raise self._error(method, self._lost)
        ident = next(self._ids)
        future: asyncio.Future[p.Response] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self._channel.write(p.encode(p.Request(ident, method, params or {})))
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise self._error(method, f"no answer within {timeout:g}s") from None
        except ConnectionError as err:
            raise self._error(method, f"the connection was lost ({err})") from None
        finally:
            self._pending.pop(ident, None)
        if response.fault is not None:
            raise self._error(method, response.fault.message)
        return response.result

    async def _read(self) -> None:
        reason = "the connection was lost"
        try:
            while line := await self._channel.readline():
                try:
                    frame = p.decode(line)
                except p.ProtocolError as err:
                    reason = f"protocol error: {err}"
                    break
                if isinstance(frame, p.Response):
                    future = self._pending.get(frame.id)
                    if future is not None and not future.done():
                        future.set_result(frame)
                elif isinstance(frame, p.Event) and self.on_event is not None:
                    self.on_event(frame)
        except ConnectionError as err:
            reason = f"the connection was lost ({err})"
        self._fail(reason)

    def _fail(self, reason: str) -> None:
        """The link is lost: every call waiting on it fails now, and every later one at once."""
        if self._lost is None:
            self._lost = reason
        self._gone.set()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(self._error("", self._lost))

    async def _heartbeat(self) -> None:
        """A ping every HEARTBEAT seconds: a link whose host stopped answering (a cable pulled, a host
        frozen: TCP says nothing for minutes) fails its calls within HEARTBEAT_DEADLINE instead of each
        call's own, longer deadline; and the agent, hearing nothing for SILENCE seconds, ends."""
        while self._lost is None:
            await asyncio.sleep(p.HEARTBEAT)  # a timer between pings, not a poll of anything
            try:
                await self.call("ping", timeout=p.HEARTBEAT_DEADLINE)
            except RemoteCallError:
                self._fail(f"no answer to a heartbeat within {p.HEARTBEAT_DEADLINE:g}s: the connection is "
                           "lost")
                return

    def _error(self, method: str, detail: str) -> RemoteCallError:
        return RemoteCallError(self.target.node, self.target.where, detail, method=method)

    @property
    def alive(self) -> bool:
        return self._lost is None

    async def wait_lost(self) -> str:
        """Wait until the connection ends (the agent's channel closed, or `close()`); returns why. The
        watch daemon reconnects then, at once, instead of finding out at its next pass."""
        await self._gone.wait()
        return self._lost or "the link was closed"

    # --- sockets on the host ----------------------------------------------------------------------

    async def forward_unix(self, remote_path: str) -> str:
        """A local unix socket path whose connections reach `remote_path` on the host (QMP, serial)."""
        try:
            return await self._channel.forward(remote_path)
        except (OSError, ValueError) as err:
            raise self._error("forward", f"{remote_path}: {err}") from None

    async def close(self) -> None:
        await self._channel.close()
        for task in (self._reader, self._heart):
            task.cancel()
        await asyncio.gather(self._reader, self._heart, return_exceptions=True)
        self._lost = self._lost or "the link was closed"
        self._gone.set()
