"""A small adapter over qemu.qmp: connect, execute, wait for events, close, each under a deadline.

qemu.qmp is 0.0.x and its API may change; everything else in the reconciler talks to the `QmpSession`
Protocol defined here, so executor unit tests can use a fake and a library upgrade touches one module.
Every qemu.qmp / OS error is wrapped into a typed `errors.QmpError` subclass carrying the socket path.
Nothing here waits without a deadline: a hung monitor socket raises `QmpTimeout`. Deadlines use
`asyncio.timeout`, never `asyncio.wait_for`: on Python 3.11, wait_for drops a cancellation that lands in
the loop iteration where the awaited call completes, so a Ctrl-C could be lost mid-migration.

`query_status` (a launch waits for its first answer) and `PlainSession` (a forced stop's two commands)
speak the few QMP lines they need over a plain asyncio stream instead: no client object, no reader task,
and qemu.qmp (with its logging setup) is imported only when a qemu.qmp session is opened.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from reconciler.errors import QmpCommandError, QmpConnectError, QmpDisconnected, QmpError, QmpTimeout
from reconciler.values import Value

if TYPE_CHECKING:
    from qemu.qmp import QMPClient


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class QmpEvent(Value):
    """One QMP event."""

    name: str
    data: Mapping[str, Any] = field(default_factory=dict)
    timestamp: float = 0.0  # epoch seconds, from QEMU


class QmpSession(Protocol):
    """One open monitor connection."""

    @property
    def socket_path(self) -> str: ...

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      timeout: float = 5.0) -> Any:
        """The command's `return` value; QmpCommandError / QmpTimeout / QmpDisconnected on failure."""
        ...

    async def wait_event(self, names: Iterable[str], timeout: float) -> QmpEvent:
        """The first event (received since connecting) whose name is in `names`; QmpTimeout otherwise."""
        ...

    async def close(self) -> None: ...


class QemuQmpSession:
    """`QmpSession` backed by qemu.qmp.QMPClient. Events are buffered from the moment of connecting."""

    def __init__(self, client: QMPClient, socket_path: str) -> None:
        self._client = client
        self._path = socket_path

    @property
    def socket_path(self) -> str:
        return self._path

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      timeout: float = 5.0) -> Any:
        from qemu.qmp import ExecInterruptedError, ExecuteError, QMPError

        try:
            async with asyncio.timeout(timeout):
                return await self._client.execute(command, arguments)
        except TimeoutError:
            raise QmpTimeout(self._path, f"{command}: no answer within {timeout:g}s") from None
        except ExecuteError as err:
            raise QmpCommandError(self._path, str(err), command, err.error_class) from None
        except ExecInterruptedError:
            raise QmpDisconnected(self._path, f"{command}: connection closed before the answer") from None
        except (QMPError, OSError, EOFError) as err:
            raise QmpDisconnected(self._path, f"{command}: {err or type(err).__name__}") from None

    async def wait_event(self, names: Iterable[str], timeout: float) -> QmpEvent:
        wanted = frozenset(names)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QmpTimeout(self._path, f"no {'/'.join(sorted(wanted))} event within {timeout:g}s")
            try:
                async with asyncio.timeout(remaining):
                    msg = await self._client.events.get()
            except TimeoutError:
                continue  # loop once more to raise with the message above
            if msg["event"] in wanted:
                return _event(msg)

    async def close(self) -> None:
        from qemu.qmp import QMPError

        with contextlib.suppress(QMPError, OSError, EOFError):
            await self._client.disconnect()


def _event(msg: Mapping[str, Any]) -> QmpEvent:
    data = msg.get("data")
    ts = msg.get("timestamp")
    stamp = ts.get("seconds", 0) + ts.get("microseconds", 0) / 1e6 if isinstance(ts, dict) else 0.0
    return QmpEvent(name=str(msg["event"]), data=dict(data) if isinstance(data, dict) else {},
                    timestamp=stamp)


NEGOTIATION_ATTEMPTS = 3


async def connect(socket_path: str, timeout: float = 5.0, name: str = "reconciler", *,
                  patient: bool = False) -> QemuQmpSession:
    """Connect and negotiate capabilities within `timeout`; QmpConnectError or QmpTimeout on failure.

    QEMU may send an event before its reply to `qmp_capabilities` (the command switches the monitor to
    command mode before the reply is queued; an event emitted in between goes first: seen right after a
    migration completes, when the target emits RESUME). qemu.qmp then fails the negotiation; a fresh
    connection, at once, within the same deadline, succeeds.

    `patient`: a monitor slow to accept is waited for. QEMU listens with a backlog of one (two pending
    connections) and a QEMU that is not being scheduled accepts none, so a third client's non-blocking
    connect fails at once. A patient connect is a blocking one in a worker thread, bounded by SO_SNDTIMEO:
    the kernel wakes it the moment QEMU accepts (an event, not a poll)."""
    deadline = time.monotonic() + timeout
    for attempt in range(1, NEGOTIATION_ATTEMPTS + 1):
        try:
            return await _connect_once(socket_path, max(deadline - time.monotonic(), 0.001), name, timeout,
                                       patient)
        except _EventBeforeReply as err:
            if attempt == NEGOTIATION_ATTEMPTS or time.monotonic() >= deadline:
                raise QmpConnectError(socket_path, f"negotiation failed: {err.detail}") from None
    raise AssertionError("unreachable")


class _EventBeforeReply(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def _connect_once(socket_path: str, timeout: float, name: str, budget: float,
                        patient: bool = False) -> QemuQmpSession:
    """One attempt with `timeout` seconds left of the caller's `budget` (which errors name)."""
    from qemu.qmp import ConnectError, QMPClient, QMPError
    from qemu.qmp.qmp_client import GreetingError, NegotiationError

    client = QMPClient(name)
    try:
        async with asyncio.timeout(timeout):
            await client.connect(await _accepted(socket_path, timeout) if patient else socket_path)
    except ConnectError as err:
        cause = err.exc
        if isinstance(cause, NegotiationError) and isinstance(cause.exc, AssertionError):
            await _abandon(client)
            raise _EventBeforeReply("an event came before the capabilities reply") from None
        if isinstance(cause, GreetingError):  # the same race, one step earlier (seen on a loaded host)
            await _abandon(client)
            raise _EventBeforeReply(f"the greeting was not understood ({cause})") from None
        detail = (cause.strerror if isinstance(cause, OSError) and cause.strerror
                  else str(cause) or type(cause).__name__)
        raise QmpConnectError(socket_path, detail) from None
    except TimeoutError:
        await _abandon(client)
        raise QmpTimeout(socket_path, f"no greeting within {budget:g}s") from None
    except (QMPError, OSError) as err:
        raise QmpConnectError(socket_path, str(err) or type(err).__name__) from None
    return QemuQmpSession(client, socket_path)


async def _accepted(socket_path: str, timeout: float) -> socket.socket:
    """A unix socket connected to `socket_path`, waiting in the kernel (up to `timeout`) while the
    listener's backlog is full; TimeoutError when it stays full, OSError when nobody listens."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

    def blocking_connect() -> None:  # in a worker thread, which may start late: the deadline is absolute
        secs = deadline - time.monotonic()
        if secs <= 0:
            raise BlockingIOError
        secs = max(secs, 0.001)  # a zero timeval would mean no timeout at all
        timeval = struct.pack("ll", int(secs), int(secs % 1 * 1e6))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
        sock.connect(socket_path)

    try:
        await asyncio.to_thread(blocking_connect)
    except BlockingIOError:  # SO_SNDTIMEO ran out
        sock.close()
        raise TimeoutError from None
    except BaseException:
        sock.close()  # a thread still blocked in connect keeps its own reference; it ends by SO_SNDTIMEO
        raise
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def session(socket_path: str, timeout: float = 5.0) -> AsyncIterator[QemuQmpSession]:
    s = await connect(socket_path, timeout)
    try:
        yield s
    finally:
        await s.close()


async def query_status(socket_path: str, timeout: float) -> str:
    """QEMU's run state (`query-status` "status": running, paused, inmigrate, ...), all within `timeout`.

    One plain connection (`connect_plain`), three lines each way: the greeting, `qmp_capabilities`,
    `query-status`. Events QEMU sends in between (before the greeting's reply, or a RESUME right after a
    migration) are skipped, so the negotiation race qemu.qmp needs a second connection for does not arise
    here."""
    deadline = time.monotonic() + timeout
    session = await connect_plain(socket_path, timeout)
    try:
        result = await session.execute("query-status", timeout=max(deadline - time.monotonic(), 0.001),
                                       budget=timeout)
    finally:
        await session.close()
    if not isinstance(result, dict) or not isinstance(result.get("status"), str):
        raise QmpError(socket_path, f"query-status: unexpected answer {result!r}")
    return str(result["status"])


class PlainSession:
    """`QmpSession` over one plain asyncio stream, for a short conversation: a launch's first answer, a
    forced stop's query-status and quit. No client object and no reader task (and for the CLI, no import
    of qemu.qmp): each call reads the lines it needs. Events that arrive while a command waits for its
    answer are kept, in order, for `wait_event`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, socket_path: str) -> None:
        self._reader = reader
        self._writer = writer
        self._path = socket_path
        self._events: collections.deque[dict[str, Any]] = collections.deque()

    @property
    def socket_path(self) -> str:
        return self._path

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      timeout: float = 5.0, *, budget: float | None = None) -> Any:
        """`budget`: the deadline to name in a timeout's message, when `timeout` is what is left of it."""
        request: dict[str, object] = {"execute": command}
        if arguments is not None:
            request["arguments"] = dict(arguments)
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(json.dumps(request).encode() + b"\n")
                while True:
                    message = await _next_message(self._reader, self._path, command)
                    if "event" in message:
                        self._events.append(message)
                    elif "return" in message:
                        return message["return"]
                    elif isinstance(message.get("error"), dict):
                        error = message["error"]
                        raise QmpCommandError(self._path, str(error.get("desc", "")), command,
                                              str(error.get("class", "")))
        except TimeoutError:
            raise QmpTimeout(self._path, f"{command}: no answer within {budget or timeout:g}s") from None

    async def wait_event(self, names: Iterable[str], timeout: float) -> QmpEvent:
        wanted = frozenset(names)
        while self._events:
            message = self._events.popleft()
            if message["event"] in wanted:
                return _event(message)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await _next_message(self._reader, self._path, "events")
                    if message.get("event") in wanted:
                        return _event(message)
        except TimeoutError:
            raise QmpTimeout(self._path, f"no {'/'.join(sorted(wanted))} event within {timeout:g}s") from None

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


async def connect_plain(socket_path: str, timeout: float) -> PlainSession:
    """A `PlainSession` on `socket_path`, greeted and in command mode within `timeout`; QmpConnectError,
    QmpTimeout or QmpDisconnected otherwise. Events before the greeting or the capabilities' reply are
    skipped."""
    deadline = time.monotonic() + timeout
    try:
        async with asyncio.timeout(timeout):
            try:
                reader, writer = await asyncio.open_unix_connection(socket_path, limit=_LINE_LIMIT)
            except OSError as err:
                raise QmpConnectError(socket_path, err.strerror or str(err) or type(err).__name__) from None
            try:
                greeting = await _next_message(reader, socket_path, "greeting")
                while "QMP" not in greeting:
                    greeting = await _next_message(reader, socket_path, "greeting")
            except BaseException:
                writer.close()
                raise
    except TimeoutError:
        raise QmpTimeout(socket_path, f"no greeting within {timeout:g}s") from None
    session = PlainSession(reader, writer, socket_path)
    try:
        await session.execute("qmp_capabilities", timeout=max(deadline - time.monotonic(), 0.001),
                              budget=timeout)
    except BaseException:
        writer.close()
        raise
    session._events.clear()  # events from before command mode are skipped, not kept for wait_event
    return session


_LINE_LIMIT = 1 << 20  # bytes of one QMP message (query-status and its events are far smaller)


async def _next_message(reader: asyncio.StreamReader, socket_path: str, stage: str) -> dict[str, Any]:
    """The next JSON object QEMU sent (one per line); QmpDisconnected at EOF or on a garbled line."""
    try:
        line = await reader.readline()
    except (OSError, ValueError) as err:  # ValueError: a line over the limit
        raise QmpDisconnected(socket_path, f"{stage}: {err or type(err).__name__}") from None
    if not line.endswith(b"\n"):
        raise QmpDisconnected(socket_path, f"{stage}: connection closed before the answer")
    try:
        message = json.loads(line)
    except ValueError:
        raise QmpDisconnected(socket_path, f"{stage}: not a QMP message: {line[:80]!r}") from None
    if not isinstance(message, dict):
        raise QmpDisconnected(socket_path, f"{stage}: not a QMP message: {line[:80]!r}")
    return message


async def _abandon(client: QMPClient) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(0.5):
            await client.disconnect()


async def expect_name(session: QmpSession, instance: str, timeout: float) -> None:
    """Close `session` and raise QmpConnectError unless its QEMU is `instance`'s (`-name guest=...`,
    read by `query-name`): a socket reached through a forward is checked before any command is sent."""
    try:
        answer = await session.execute("query-name", timeout=timeout)
    except QmpError:
        await session.close()
        raise
    name = answer.get("name") if isinstance(answer, dict) else None
    if name != instance:
        await session.close()
        raise QmpConnectError(session.socket_path, f"this is the monitor of {name!r}, not of {instance!r}: "
                                                   "refusing to use it")
