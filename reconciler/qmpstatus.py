"""`query-status` of many monitors at once, without an event loop: discovery's synchronous path.

`plan` and `status` on this machine's nodes ask every live instance its run state and do nothing else
asynchronous; importing asyncio for that (ssl, concurrent.futures, logging, ...) cost about a fifth of
such a run. Here every monitor is connected at once and driven by one selector until it has answered or
the shared deadline has passed: the same three lines each way, the same events skipped and the same typed
errors as `qmp.query_status` (which the event-loop code keeps using), so a slow monitor costs the
deadline once, not once per instance.
"""

from __future__ import annotations

# _socket: what `socket` wraps. That module's enum tables cost ~1.5 ms to import, and nothing here needs
# more than a unix socket's connect, send, recv and getsockopt.
import _socket
import json
import os
import selectors
import time
from collections.abc import Sequence
from typing import Any

from reconciler.errors import QmpCommandError, QmpConnectError, QmpDisconnected, QmpError, QmpTimeout

_LINE_LIMIT = 1 << 20  # bytes of one QMP message, as qmp.query_status
_COMMANDS = {"qmp_capabilities": b'{"execute": "qmp_capabilities"}\n',
             "query-status": b'{"execute": "query-status"}\n'}
_NEXT = {"greeting": "qmp_capabilities", "qmp_capabilities": "query-status"}


class _Exchange:
    """One monitor's conversation; `answer` is set (a status or a QmpError) once it is over."""

    __slots__ = ("answer", "inbox", "outbox", "path", "sock", "stage")

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock: _socket.socket | None = None
        self.stage = "connect"
        self.inbox = b""
        self.outbox = b""
        self.answer: str | QmpError | None = None

    def fail(self, err: QmpError) -> None:
        self.answer = err

    def lines(self) -> None:
        """Handle every complete line received (greeting, events, replies)."""
        while self.answer is None:
            end = self.inbox.find(b"\n")
            if end < 0:
                if len(self.inbox) > _LINE_LIMIT:
                    self.fail(QmpDisconnected(self.path, f"{self.stage}: a message over {_LINE_LIMIT} bytes"))
                return
            line, self.inbox = self.inbox[:end + 1], self.inbox[end + 1:]
            self.message(line)

    def message(self, line: bytes) -> None:
        try:
            msg: Any = json.loads(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self.fail(QmpDisconnected(self.path, f"{self.stage}: not a QMP message: {line[:80]!r}"))
            return
        if self.stage == "greeting":
            if "QMP" in msg:
                self.send_next()
            return
        if "return" in msg:
            if self.stage == "query-status":
                self.finish(msg["return"])
            else:
                self.send_next()
            return
        error = msg.get("error")
        if isinstance(error, dict):  # anything else (an event) is skipped
            self.fail(QmpCommandError(self.path, str(error.get("desc", "")), self.stage,
                                      str(error.get("class", ""))))

    def send_next(self) -> None:
        self.stage = _NEXT[self.stage]
        self.outbox += _COMMANDS[self.stage]

    def finish(self, result: object) -> None:
        if not isinstance(result, dict) or not isinstance(result.get("status"), str):
            self.fail(QmpError(self.path, f"query-status: unexpected answer {result!r}"))
        else:
            self.answer = str(result["status"])

    def timed_out(self, timeout: float) -> QmpTimeout:
        what = "no greeting" if self.stage in ("connect", "greeting") else f"{self.stage}: no answer"
        return QmpTimeout(self.path, f"{what} within {timeout:g}s")


def query_all(socket_paths: Sequence[str], timeout: float) -> list[str | QmpError]:
    """For each socket, in order: QEMU's run state (`query-status` "status"), or the QmpError saying why
    there is none (QmpConnectError, QmpTimeout, QmpDisconnected, QmpCommandError), all within `timeout`."""
    exchanges = [_Exchange(p) for p in socket_paths]
    if not exchanges:
        return []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        try:
            for ex in exchanges:
                _connect(ex, sel)
            while True:
                waiting = [ex for ex in exchanges if ex.answer is None]
                remaining = deadline - time.monotonic()
                if not waiting or remaining <= 0:
                    break
                for key, events in sel.select(remaining):
                    _step(key, events, sel)
        finally:
            for ex in exchanges:
                if ex.sock is not None:
                    ex.sock.close()
    return [ex.answer if ex.answer is not None else ex.timed_out(timeout) for ex in exchanges]


def _connect(ex: _Exchange, sel: selectors.BaseSelector) -> None:
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    ex.sock = sock
    sock.setblocking(False)
    try:
        sock.connect(ex.path)
    except BlockingIOError:  # the listener's backlog is full: connected once it is writable
        sel.register(sock, selectors.EVENT_WRITE, ex)
        return
    except OSError as err:
        ex.fail(QmpConnectError(ex.path, err.strerror or str(err) or type(err).__name__))
        return
    ex.stage = "greeting"
    sel.register(sock, selectors.EVENT_READ, ex)


def _step(key: selectors.SelectorKey, events: int, sel: selectors.BaseSelector) -> None:
    """Move one exchange on by what its socket is ready for; unregister it once it has its answer."""
    ex: _Exchange = key.data
    sock = ex.sock
    assert sock is not None
    try:
        if ex.stage == "connect":
            code = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if code:
                ex.fail(QmpConnectError(ex.path, os.strerror(code)))
            else:
                ex.stage = "greeting"
        elif events & selectors.EVENT_READ:
            data = sock.recv(65536)
            if not data:
                ex.fail(QmpDisconnected(ex.path, f"{ex.stage}: connection closed before the answer"))
            else:
                ex.inbox += data
                ex.lines()
        if ex.outbox and ex.answer is None:
            sent = sock.send(ex.outbox)
            ex.outbox = ex.outbox[sent:]
    except BlockingIOError:
        pass
    except OSError as err:
        ex.fail(QmpDisconnected(ex.path, f"{ex.stage}: {err or type(err).__name__}"))
    if ex.answer is not None:
        sel.unregister(sock)
        return
    wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if ex.outbox else 0)
    if wanted != key.events:
        sel.modify(sock, wanted, ex)
