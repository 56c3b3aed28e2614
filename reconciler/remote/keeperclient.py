"""The CLI's side of a link keeper: find the live keeper of an SSH target, take an agent from it, start
one when there is none, close them (`reconciler disconnect`).

Why: a CLI run pays for its SSH link three times over -- importing asyncssh, the handshake, and the host
starting its agent's interpreter -- which is most of a `plan` on a remote host. A keeper
(reconciler.remote.keeper) holds the connection and one warm agent for the next run, as OpenSSH's
ControlPersist does. This module imports no asyncssh: a run that finds a live keeper never loads it.

A keeper is keyed by a digest of its whole target (host, port, user, key and known_hosts files *and their
contents*, agent command, persistence, our version): a changed key or known_hosts means another keeper,
so a keeper never lets a run skip a check the run would make itself. Its socket lives in a 0700 directory
of ours and both ends check the other's uid (SO_PEERCRED). Anything amiss with a keeper (none, dead,
going away, its connection quiet) makes the run connect directly, as it would without one: a keeper is
only a faster way to the same result. A keeper whose connection went quiet (its spare does not answer a
ping, or a channel does not open, within connectTimeout) does not say the host is unreachable: after an
outage its TCP connection may still be backing off its retransmissions while a fresh one gets through, so
the run's own connection attempt decides. One answer is final: the keeper could not start our agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from reconciler import __version__
from reconciler.errors import RemoteAgentError
from reconciler.remote import protocol as p
from reconciler.remote.link import HostLink, SshTarget, check_hello
from reconciler.values import Value

_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")  # what asyncssh tries when no identityFile is given
HANDOFF_TIMEOUT = 12.0  # the keeper starting an agent for us (no spare ready): its 10 s hello, and more
EXIT_TIMEOUT = 5.0


def link_dir() -> str:
    """Where keepers' sockets live: $RECONCILER_LINK_DIR, else /run/reconciler/links for root, else
    $XDG_RUNTIME_DIR/reconciler/links, else /tmp/reconciler-links-UID."""
    if os.environ.get("RECONCILER_LINK_DIR"):
        return os.environ["RECONCILER_LINK_DIR"]
    if os.geteuid() == 0:
        return "/run/reconciler/links"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return f"{runtime}/reconciler/links" if runtime else f"/tmp/reconciler-links-{os.geteuid()}"


def private_dir(path: str) -> str:
    """`path`, created 0700 if missing; OSError unless it is a directory of ours that nobody else may
    enter (a socket there is one we made)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise PermissionError(f"{path} is not a 0700 directory of uid {os.geteuid()}")
    return path


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class KeeperPaths(Value):
    """Where a remote host's keeper lives."""

    base: str  # DIR/DIGEST

    @property
    def socket(self) -> str:
        return self.base + ".sock"

    @property
    def lock(self) -> str:  # flock held by the live keeper for its whole life
        return self.base + ".lock"

    @property
    def starting(self) -> str:  # flock held from the spawn until the keeper listens (or fails)
        return self.base + ".starting"

    @property
    def forwards(self) -> str:  # the keeper's QMP/serial forwards (0700)
        return self.base + ".fwd"

    @property
    def log(self) -> str:
        return self.base + ".log"


def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as err:
        return f"unreadable: {err.errno}"


def digest(target: SshTarget) -> str:
    """The keeper's key: everything that decides what the connection is, including the contents of the
    key and known_hosts files (a changed known_hosts must be checked by a new handshake)."""
    home = Path.home() / ".ssh"
    known = target.known_hosts_file or str(home / "known_hosts")
    keys = [target.identity_file] if target.identity_file else [str(home / k) for k in _DEFAULT_KEYS]
    what = [__version__, p.PROTOCOL, target.host, target.port, target.user, target.identity_file,
            target.known_hosts_file, target.connect_timeout, list(target.agent_command), target.persist,
            _file_digest(known), [_file_digest(k) for k in keys]]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:24]


def paths_of(target: SshTarget) -> KeeperPaths:
    return KeeperPaths(os.path.join(private_dir(link_dir()), digest(target)))


def peer_ids(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a unix socket."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    return pid, uid


def _no_keeper_alive(paths: KeeperPaths) -> bool:
    """True when no keeper holds the lock of `paths` (then its socket, if any, is stale)."""
    try:
        fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)  # the lock goes with the descriptor
    return True


def clean_stale(paths: KeeperPaths) -> None:
    """Remove a dead keeper's socket and forwards (never a live keeper's: it holds the lock)."""
    if not _no_keeper_alive(paths):
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.socket)
    if os.path.isdir(paths.forwards):
        for name in os.listdir(paths.forwards):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(paths.forwards, name))
        with contextlib.suppress(OSError):
            os.rmdir(paths.forwards)


class KeptChannel:
    """The agent's stdio relayed by a keeper over a unix socket; forwards are asked of the keeper."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 paths: KeeperPaths) -> None:
        self._reader = reader
        self._writer = writer
        self._paths = paths

    async def readline(self) -> bytes:
        try:
            return await self._reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as err:
            raise ConnectionError(f"frame too long: {err}") from None

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionError("the link keeper closed the channel")
        self._writer.write(data)

    async def forward(self, remote_path: str) -> str:
        reply = await request(self._paths, {"op": "forward", "path": remote_path}, timeout=HANDOFF_TIMEOUT)
        local = reply.get("local")
        if not isinstance(local, str):
            raise OSError(str(reply.get("error") or "the link keeper made no forward"))
        return local

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def _open(paths: KeeperPaths, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the keeper at `paths`, whose peer is checked to run as our uid."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(paths.socket, limit=p.MAX_FRAME)
    _pid, uid = peer_ids(writer.get_extra_info("socket"))
    if uid != os.geteuid():
        writer.close()
        raise PermissionError(f"{paths.socket}: the keeper runs as uid {uid}, not {os.geteuid()}")
    return reader, writer


async def request(paths: KeeperPaths, op: dict[str, object], *, timeout: float) -> dict[str, object]:
    """One request to the keeper and its one-line answer (`{"ok": {...}}` or `{"error": "..."}`)."""
    reader, writer = await _open(paths, timeout)
    try:
        writer.write(json.dumps(op).encode() + b"\n")
        async with asyncio.timeout(timeout):
            line = await reader.readline()
    finally:
        writer.close()
    reply = json.loads(line) if line else {"error": "the link keeper closed the connection"}
    ok = reply.get("ok")
    return ok if isinstance(ok, dict) else {"error": str(reply.get("error", reply))}


async def open_kept(target: SshTarget) -> HostLink | None:
    """A link through the live keeper of `target` (an agent of its own, started and version-checked),
    or None when there is no usable keeper (the caller then connects directly)."""
    try:
        paths = paths_of(target)
    except OSError:
        return None
    try:
        reader, writer = await _open(paths, target.connect_timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        clean_stale(paths)
        return None
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(b'{"op": "agent"}\n')
        async with asyncio.timeout(target.connect_timeout + HANDOFF_TIMEOUT):  # the keeper's own first
            line = await reader.readline()
        obj = json.loads(line) if line else None
    except (OSError, TimeoutError, ValueError):
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("agent"), str):
        writer.close()  # the keeper could not start our agent: as our own start would have failed
        raise RemoteAgentError(target.node, target.where, obj["agent"])
    if not isinstance(obj, dict) or "hello" not in obj:  # going away, its connection quiet, or said no
        writer.close()
        return None
    try:
        frame: p.Frame | None = p.decode(line)
    except p.ProtocolError:
        frame = None
    hello = check_hello(target, frame, line, " ".join(target.agent_command))
    return HostLink(target, KeptChannel(reader, writer, paths), hello, kept=True)


def spawn(target: SshTarget) -> None:
    """Start a keeper for `target` in the background (detached: its own session, no terminal). It
    connects on its own, and serves the next run if it succeeds; it exits quietly if a keeper is
    already there or the host cannot be reached."""
    try:
        paths = paths_of(target)
        starting = os.open(paths.starting, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        fcntl.flock(starting, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the child holds it on, until it listens
        log = os.open(paths.log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError:  # another keeper is being started
        os.close(starting)
        return
    try:
        proc = subprocess.Popen([sys.executable, "-m", "reconciler.remote.keeper", paths.base, str(starting)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log, cwd="/",
                                start_new_session=True, close_fds=True, pass_fds=(starting,))
    except OSError:
        return
    finally:
        os.close(log)
        os.close(starting)
    assert proc.stdin is not None
    with contextlib.suppress(OSError):
        proc.stdin.write(json.dumps(asdict(target)).encode())
    with contextlib.suppress(OSError):
        proc.stdin.close()


def wait_started(target: SshTarget, timeout: float) -> bool:
    """Wait until no keeper of `target` is being started (it listens, or it failed): True if one now
    listens. For tests and benchmarks that need the keeper a previous run spawned."""
    wait_start(paths_of(target), timeout)
    return keeper_info(target) is not None


def wait_start(paths: KeeperPaths, timeout: float) -> None:
    """Until the start lock of `paths` is free: the keeper being started listens, or has failed."""
    try:
        fd = os.open(paths.starting, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return  # never started
    try:
        waiter = threading.Thread(target=fcntl.flock, args=(fd, fcntl.LOCK_EX), daemon=True)
        waiter.start()
        waiter.join(timeout)  # the flock is let go by the keeper: an event, waited for with a deadline
        if waiter.is_alive():
            raise TimeoutError(f"the link keeper {paths.base} did not start within {timeout:g}s")
    finally:
        os.close(fd)


def close_keeper(paths: KeeperPaths, timeout: float = EXIT_TIMEOUT) -> int | None:
    """Tell the keeper at `paths` to end, and wait until its process has exited (a pidfd on the peer of
    its socket, checked to be ours). Returns its PID, or None when there was no live keeper."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(paths.socket)
        except (FileNotFoundError, ConnectionRefusedError):
            clean_stale(paths)
            return None
        pid, uid = peer_ids(sock)
        if uid != os.geteuid():
            raise PermissionError(f"{paths.socket}: the keeper runs as uid {uid}, not {os.geteuid()}")
        pidfd = os.pidfd_open(pid)  # pinned while it is connected to us: it is the keeper
        try:
            sock.sendall(b'{"op": "exit"}\n')
            with contextlib.suppress(OSError):
                sock.recv(4096)
            if not select.select([pidfd], [], [], timeout)[0]:
                raise TimeoutError(f"the link keeper (pid {pid}) did not end within {timeout:g}s")
        finally:
            os.close(pidfd)
    clean_stale(paths)
    return pid


def close_all(directory: str | None = None, start_timeout: float = 30.0) -> list[int]:
    """End every keeper in `directory` (default: ours), those being started too (once they listen);
    their PIDs."""
    where = directory or link_dir()
    if not os.path.isdir(where):
        return []
    bases = sorted({name.rsplit(".", 1)[0] for name in os.listdir(where)
                    if name.endswith((".sock", ".starting"))})
    pids = []
    for base in bases:
        paths = KeeperPaths(os.path.join(where, base))
        wait_start(paths, start_timeout)
        pid = close_keeper(paths)
        if pid is not None:
            pids.append(pid)
    return pids


def keeper_info(target: SshTarget) -> dict[str, object] | None:
    """What the live keeper of `target` says of itself (pid, runs served, ...), or None."""
    async def ask() -> dict[str, object] | None:
        try:
            reply = await request(paths_of(target), {"op": "info"}, timeout=target.connect_timeout)
        except (OSError, TimeoutError):
            return None
        return None if "error" in reply else reply
    return asyncio.run(ask())
