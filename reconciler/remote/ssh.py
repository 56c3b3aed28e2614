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
from collections.abc import Sequence
from typing import Any

from reconciler import phases
from reconciler.errors import HostKeyRejected, HostUnreachable, RemoteAgentError
from reconciler.remote import protocol as p
from reconciler.remote.link import HostLink, SshTarget, check_hello, install_hint
from reconciler.remote.sshlib import asyncssh

HELLO_TIMEOUT = 10.0  # the agent's interpreter start-up on a loaded host

__all__ = ["HostLink", "SshChannel", "SshTarget", "open_link"]


class SshChannel:
    """The agent's session on an SSH connection of this process (closing it ends the connection), and
    the unix-socket forwards made on that connection, in a private 0700 directory."""

    def __init__(self, target: SshTarget, conn: asyncssh.SSHClientConnection,
                 proc: asyncssh.SSHClientProcess[bytes]) -> None:
        self._target = target
        self._conn = conn
        self._proc = proc
        self._listeners: list[asyncssh.SSHListener] = []
        self._sockdir: str | None = None
        self._socket_names = itertools.count()  # taken before any await: concurrent forwards never share

    async def readline(self) -> bytes:
        try:
            return await self._proc.stdout.readline()
        except (OSError, asyncssh.Error) as err:
            raise ConnectionError(str(err) or type(err).__name__) from None

    def write(self, data: bytes) -> None:
        try:
            self._proc.stdin.write(data)
        except (OSError, asyncssh.Error) as err:
            raise ConnectionError(str(err) or type(err).__name__) from None

    async def forward(self, remote_path: str) -> str:
        if self._sockdir is None:
            self._sockdir = tempfile.mkdtemp(prefix=f"reconciler-{self._target.node}-")  # 0700
        # The name is taken before the await below: naming it after the listeners made so far let two
        # concurrent forwards bind one path, and one instance's QMP client reached another's QEMU.
        local = os.path.join(self._sockdir, f"{next(self._socket_names)}.sock")
        try:
            listener = await self._conn.forward_local_path(local, remote_path)
        except asyncssh.Error as err:
            raise OSError(str(err)) from None
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
        if self._sockdir is not None:
            for name in os.listdir(self._sockdir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self._sockdir, name))
            with contextlib.suppress(OSError):
                os.rmdir(self._sockdir)


async def open_link(target: SshTarget) -> HostLink:
    """Connect, start the agent and check its version; typed errors name the host and the cause."""
    with phases.span("ssh handshake"):
        conn = await _connect(target)
    try:
        with phases.span("agent start, hello"):
            proc = await conn.create_process(_agent_command(target.agent_command), encoding=None)
            hello = await _hello(target, proc)
    except BaseException:
        conn.close()
        raise
    return HostLink(target, SshChannel(target, conn, proc), hello)


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


async def _hello(target: SshTarget, proc: asyncssh.SSHClientProcess[bytes],
                 timeout: float = HELLO_TIMEOUT) -> p.Hello:
    def agent_error(detail: str) -> RemoteAgentError:
        return RemoteAgentError(target.node, target.where, detail)

    command = _agent_command(target.agent_command)
    stderr: bytes | str = b""
    try:
        async with asyncio.timeout(timeout):
            line = await proc.stdout.readline()
            if not line:
                stderr = (await proc.wait()).stderr or b""
    except TimeoutError:
        raise agent_error(f"`{command}` said nothing within {timeout:g}s") from None
    if not line:
        err = _last_line(stderr) or f"exit status {proc.exit_status}"
        raise agent_error(f"cannot start `{command}`: {err}; {install_hint()}")
    try:
        frame: p.Frame | None = p.decode(line)
    except p.ProtocolError:
        frame = None
    return check_hello(target, frame, line, command)


def _last_line(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
