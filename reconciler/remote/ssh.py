"""The near side of a remote node: one SSH connection per host, the agent on it, calls with deadlines.

Why asyncssh: it speaks SSH natively in asyncio, so a call, a forwarded QMP socket and the agent's
pushed events are all awaitables on one multiplexed connection, with no subprocess per channel (the
OpenSSH client would need ControlMaster and one process per forward). Host keys are always verified
against a known_hosts file; authentication is by key only; no ssh_config or ssh-agent is consulted, so
what the manifest says is exactly what is used.

A connection lost in the middle of a call fails that call (RemoteCallError): nothing is guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from reconciler import __version__
from reconciler.errors import (
    HostKeyRejected,
    HostUnreachable,
    RemoteAgentError,
    RemoteCallError,
)
from reconciler.remote import protocol as p

DEFAULT_AGENT = ("reconciler", "agent")
HELLO_TIMEOUT = 10.0  # the agent's interpreter start-up on a loaded host


@dataclass(frozen=True, slots=True)
class SshTarget:
    """How to reach one node (a Node manifest's `ssh`, with defaults applied)."""

    node: str
    host: str
    port: int = 22
    user: str = "root"
    identity_file: str | None = None  # None: asyncssh's default key files in ~/.ssh
    known_hosts_file: str | None = None  # None: ~/.ssh/known_hosts
    connect_timeout: float = 10.0
    agent_command: tuple[str, ...] = DEFAULT_AGENT

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


class HostLink:
    """One open connection to a host, with its agent running; `close()` ends both."""

    def __init__(self, target: SshTarget, conn: asyncssh.SSHClientConnection,
                 proc: asyncssh.SSHClientProcess[bytes], hello: p.Hello) -> None:
        self.target = target
        self.hello = hello
        self._conn = conn
        self._proc = proc
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[p.Response]] = {}
        self._listeners: list[asyncssh.SSHListener] = []
        self._sockdir: str | None = None
        self._socket_names = itertools.count()  # taken before any await: concurrent forwards never share
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
            self._proc.stdin.write(p.encode(p.Request(ident, method, params or {})))
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise self._error(method, f"no answer within {timeout:g}s") from None
        finally:
            self._pending.pop(ident, None)
        if response.fault is not None:
            raise self._error(method, response.fault.message)
        return response.result

    async def _read(self) -> None:
        reason = "the connection was lost"
        try:
            while line := await self._proc.stdout.readline():
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
        except (OSError, asyncssh.Error) as err:
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
        if self._sockdir is None:
            self._sockdir = tempfile.mkdtemp(prefix=f"reconciler-{self.target.node}-")  # 0700
        # The name is taken before the await below: naming it after the listeners made so far let two
        # concurrent forwards bind one path, and one instance's QMP client reached another's QEMU.
        local = os.path.join(self._sockdir, f"{next(self._socket_names)}.sock")
        try:
            listener = await self._conn.forward_local_path(local, remote_path)
        except (OSError, asyncssh.Error) as err:
            raise self._error("forward", f"{remote_path}: {err}") from None
        self._listeners.append(listener)
        return local

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        with contextlib.suppress(OSError, asyncssh.Error):
            self._proc.stdin.write_eof()
        self._conn.close()
        with contextlib.suppress(OSError, asyncssh.Error):
            await self._conn.wait_closed()
        for task in (self._reader, self._heart):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._lost = self._lost or "the link was closed"
        self._gone.set()
        if self._sockdir is not None:
            for name in os.listdir(self._sockdir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._sockdir, name))
            with contextlib.suppress(OSError):
                os.rmdir(self._sockdir)


async def open_link(target: SshTarget) -> HostLink:
    """Connect, start the agent and check its version; typed errors name the host and the cause."""
    conn = await _connect(target)
    try:
        proc = await conn.create_process(_agent_command(target.agent_command), encoding=None)
        hello = await _hello(target, proc)
    except BaseException:
        conn.close()
        raise
    return HostLink(target, conn, proc, hello)


async def _connect(target: SshTarget) -> asyncssh.SSHClientConnection:
    def unreachable(detail: str) -> HostUnreachable:
        return HostUnreachable(target.node, target.where, f"unreachable: {detail}")

    options: dict[str, Any] = {}
    if target.identity_file is not None:
        options["client_keys"] = [target.identity_file]
    try:
        async with asyncio.timeout(target.connect_timeout):
            return await asyncssh.connect(
                target.host, target.port, username=target.user,
                known_hosts=target.known_hosts_file if target.known_hosts_file is not None else (),
                config=None, agent_path=None, preferred_auth="publickey", password=None,
                connect_timeout=target.connect_timeout, login_timeout=target.connect_timeout,
                keepalive_interval=15, keepalive_count_max=3, **options,
            )
    except TimeoutError:
        raise unreachable(f"no answer within {target.connect_timeout:g}s") from None
    except asyncssh.HostKeyNotVerifiable as err:
        known = target.known_hosts_file or "~/.ssh/known_hosts"
        raise HostKeyRejected(target.node, target.where,
                              f"host key not verified against {known} ({err.reason}): a possible "
                              "man-in-the-middle attack, or the key changed; refusing to connect") from None
    except asyncssh.PermissionDenied:
        raise unreachable("authentication failed (key refused)") from None
    except ConnectionRefusedError:
        raise unreachable("connection refused") from None
    except (OSError, asyncssh.Error) as err:
        raise unreachable(str(err) or type(err).__name__) from None


def _agent_command(argv: Sequence[str]) -> str:
    """The fixed agent command as the remote shell's words. It never carries manifest data other than
    a Node's own `agentCommand`, and every word is quoted, so the shell sees exactly these words."""
    return " ".join(shlex.quote(a) for a in argv)


async def _hello(target: SshTarget, proc: asyncssh.SSHClientProcess[bytes]) -> p.Hello:
    def agent_error(detail: str) -> RemoteAgentError:
        return RemoteAgentError(target.node, target.where, detail)

    install = f"install it there with: pip install reconciler=={__version__}"
    stderr: bytes | str = b""
    try:
        async with asyncio.timeout(HELLO_TIMEOUT):
            line = await proc.stdout.readline()
            if not line:
                stderr = (await proc.wait()).stderr or b""
    except TimeoutError:
        raise agent_error(f"`{_agent_command(target.agent_command)}` said nothing within "
                          f"{HELLO_TIMEOUT:g}s") from None
    if not line:
        err = _last_line(stderr) or f"exit status {proc.exit_status}"
        raise agent_error(f"cannot start `{_agent_command(target.agent_command)}`: {err}; {install}")
    try:
        frame = p.decode(line)
    except p.ProtocolError:
        frame = None
    if not isinstance(frame, p.Hello):
        raise agent_error(f"`{_agent_command(target.agent_command)}` is not a reconciler agent "
                          f"(it said {line[:60]!r}); {install}")
    if frame.version != __version__ or frame.protocol != p.PROTOCOL:
        raise agent_error(f"reconciler {frame.version} (protocol {frame.protocol}) there, {__version__} "
                          f"(protocol {p.PROTOCOL}) here; {install}")
    return frame


def _last_line(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
