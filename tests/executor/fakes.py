"""Fakes for executor unit tests: a scripted QMP session and a process handle whose exit we control."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from reconciler.errors import QmpCommandError, QmpTimeout
from reconciler.qmp import QmpEvent

Reply = Callable[["FakeSession", Mapping[str, object] | None], Any]


class FakeProcess:
    """Stands in for node.Process: exits when told to (or on the signals listed in `dies_on`)."""

    def __init__(self, dies_on: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGKILL)) -> None:
        self.pid = 4242
        self.signals: list[signal.Signals] = []
        self._dies_on = set(dies_on)
        self._gone = asyncio.Event()

    def exit(self) -> None:
        self._gone.set()

    async def exited(self) -> bool:
        return self._gone.is_set()

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeProcess:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def send_signal(self, sig: signal.Signals) -> bool:
        self.signals.append(sig)
        if sig in self._dies_on:
            self.exit()
        return True

    async def wait_exit(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._gone.wait(), timeout)
        except TimeoutError:
            return False
        return True


class FakeSession:
    """A QmpSession whose commands are answered by `replies` (command -> value or callable)."""

    def __init__(self, replies: Mapping[str, Any] | None = None) -> None:
        self.replies: dict[str, Any] = dict(replies or {})
        self.commands: list[tuple[str, Mapping[str, object] | None]] = []
        self.events: asyncio.Queue[QmpEvent] = asyncio.Queue()

    @property
    def socket_path(self) -> str:
        return "fake.sock"

    def emit(self, name: str, **data: object) -> None:
        self.events.put_nowait(QmpEvent(name, dict(data)))

    async def execute(self, command: str, arguments: Mapping[str, object] | None = None,
                      timeout: float = 5.0) -> Any:
        self.commands.append((command, arguments))
        reply = self.replies.get(command, {})
        if isinstance(reply, BaseException):
            raise reply
        if callable(reply):
            return reply(self, arguments)
        return reply

    async def wait_event(self, names: Iterable[str], timeout: float) -> QmpEvent:
        wanted = set(names)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise QmpTimeout(self.socket_path, "no event")
            try:
                ev = await asyncio.wait_for(self.events.get(), left)
            except TimeoutError:
                continue
            if ev.name in wanted:
                return ev

    async def close(self) -> None:
        return None

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.commands]


def command_error(command: str) -> QmpCommandError:
    return QmpCommandError("fake.sock", "refused", command, "GenericError")
