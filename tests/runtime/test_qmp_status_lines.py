"""qmp.query_status speaks QMP's lines itself: events QEMU sends between the greeting and the replies are
skipped, an error reply is a QmpCommandError, a peer that hangs up is QmpDisconnected and one that never
greets is QmpTimeout. The peer is a unix socket server playing a scripted monitor (a real QEMU is covered
by test_qmp_e2e.py; it cannot be made to send an event at exactly these points).

qmpstatus.query_all (discovery without an event loop) answers the same, word for word: each test runs
both clients (the selector one in a thread, beside the scripted server's loop)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import pytest

from reconciler import qmp, qmpstatus
from reconciler.errors import QmpCommandError, QmpConnectError, QmpDisconnected, QmpError, QmpTimeout

from .helpers import short_state_dir

pytestmark = pytest.mark.timeout(30)


async def _selector_client(path: str, timeout: float) -> str:
    (answer,) = await asyncio.to_thread(qmpstatus.query_all, [path], timeout)
    if isinstance(answer, QmpError):
        raise answer
    return answer


@pytest.fixture(params=["asyncio", "selector"])
def client(request: pytest.FixtureRequest) -> Client:
    return qmp.query_status if request.param == "asyncio" else _selector_client

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}
EVENT = {"event": "RESUME", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Client = Callable[[str, float], Awaitable[str]]


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


async def _ask(client: Client, script: Script, timeout: float = 2.0) -> str:
    done: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        done.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await script(reader, writer)
        finally:
            writer.close()

    for d in short_state_dir():
        path = f"{d}/mon.sock"
        server = await asyncio.start_unix_server(serve, path)
        try:
            return await client(path, timeout)
        finally:
            server.close()
            await asyncio.wait_for(asyncio.gather(*done, return_exceptions=True), 5)
            await server.wait_closed()
    raise AssertionError("no state dir")


async def _events_everywhere(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_line(GREETING))
    assert json.loads(await reader.readline()) == {"execute": "qmp_capabilities"}
    writer.write(_line(EVENT) + _line({"return": {}}))
    assert json.loads(await reader.readline()) == {"execute": "query-status"}
    writer.write(_line(EVENT) + _line(EVENT) + _line({"return": {"status": "running", "running": True}}))
    await writer.drain()
    await reader.read()  # until the client hangs up


def test_events_between_the_lines_are_skipped(client: Client) -> None:
    assert asyncio.run(_ask(client, _events_everywhere)) == "running"


async def _refuses(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_line(GREETING))
    await reader.readline()
    writer.write(_line({"return": {}}))
    await reader.readline()
    writer.write(_line({"error": {"class": "GenericError", "desc": "not now"}}))
    await writer.drain()
    await reader.read()


def test_an_error_reply_is_a_command_error(client: Client) -> None:
    with pytest.raises(QmpCommandError) as err:
        asyncio.run(_ask(client, _refuses))
    assert (err.value.command, err.value.error_class, err.value.detail) == ("query-status", "GenericError",
                                                                           "not now")


async def _hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_line(GREETING))
    await reader.readline()
    writer.close()


def test_a_peer_that_hangs_up_is_disconnected(client: Client) -> None:
    with pytest.raises(QmpDisconnected, match="qmp_capabilities: connection closed before the answer"):
        asyncio.run(_ask(client, _hangs_up))


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()


def test_no_greeting_is_a_timeout(client: Client) -> None:
    with pytest.raises(QmpTimeout, match=r"no greeting within 0\.2s"):
        asyncio.run(_ask(client, _silent, 0.2))


def test_the_selector_client_asks_every_monitor_at_once() -> None:
    """Answers come back in the order asked; a socket nobody listens on is a QmpConnectError at once,
    and two silent monitors cost the deadline once, not twice."""

    async def main() -> tuple[list[str | QmpError], float]:
        for d in short_state_dir():
            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                try:
                    await _events_everywhere(reader, writer)
                finally:
                    writer.close()

            async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.read()
                writer.close()

            servers = [await asyncio.start_unix_server(serve, f"{d}/a.sock"),
                       await asyncio.start_unix_server(mute, f"{d}/b.sock"),
                       await asyncio.start_unix_server(mute, f"{d}/c.sock")]
            try:
                t0 = time.monotonic()
                answers = await asyncio.to_thread(
                    qmpstatus.query_all, [f"{d}/a.sock", f"{d}/b.sock", f"{d}/none.sock", f"{d}/c.sock"], 0.3)
                return answers, time.monotonic() - t0
            finally:
                for server in servers:
                    server.close()
        raise AssertionError("no state dir")

    answers, took = asyncio.run(main())
    assert answers[0] == "running"
    assert isinstance(answers[1], QmpTimeout) and isinstance(answers[3], QmpTimeout)
    assert isinstance(answers[2], QmpConnectError)
    assert took < 0.3 * 2


# --- qmp.PlainSession: the forced stop's session ----------------------------------------------------------

SHUTDOWN = {"event": "SHUTDOWN", "data": {"guest": False, "reason": "host-qmp-quit"},
            "timestamp": {"seconds": 5, "microseconds": 250000}}


async def _plain(script: Script, talk: Callable[[qmp.PlainSession], Awaitable[object]]) -> object:
    async def client(path: str, timeout: float) -> object:
        session = await qmp.connect_plain(path, timeout)
        try:
            return await talk(session)
        finally:
            await session.close()

    return await _ask(client, script)  # type: ignore[arg-type]


async def _quits(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_line(EVENT) + _line(GREETING))
    assert json.loads(await reader.readline()) == {"execute": "qmp_capabilities"}
    writer.write(_line({"return": {}}))
    assert json.loads(await reader.readline()) == {"execute": "query-status"}
    writer.write(_line(EVENT) + _line({"return": {"status": "paused", "running": False}}))
    assert json.loads(await reader.readline()) == {"execute": "human-monitor-command",
                                                   "arguments": {"command-line": "info name"}}
    writer.write(_line({"error": {"class": "CommandNotFound", "desc": "no such command"}}))
    assert json.loads(await reader.readline()) == {"execute": "quit"}
    writer.write(_line(SHUTDOWN) + _line({"return": {}}))
    await writer.drain()


def test_a_plain_session_answers_commands_and_keeps_the_events_in_between() -> None:
    async def talk(session: qmp.PlainSession) -> object:
        status = await session.execute("query-status")
        with pytest.raises(QmpCommandError) as err:
            await session.execute("human-monitor-command", {"command-line": "info name"})
        quit_answer = await session.execute("quit")
        resume = await session.wait_event(["RESUME"], 1.0)  # kept while query-status waited
        shutdown = await session.wait_event(["SHUTDOWN"], 1.0)  # skipping nothing it was not asked for
        with pytest.raises(QmpDisconnected):  # the monitor is gone now
            await session.wait_event(["SHUTDOWN"], 1.0)
        return status, (err.value.command, err.value.error_class), quit_answer, resume, shutdown

    status, refused, quit_answer, resume, shutdown = asyncio.run(_plain(_quits, talk))  # type: ignore[misc]
    assert status == {"status": "paused", "running": False}
    assert refused == ("human-monitor-command", "CommandNotFound")
    assert quit_answer == {}
    assert resume == qmp.QmpEvent("RESUME", {}, 1.000002)
    assert shutdown == qmp.QmpEvent("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}, 5.25)


async def _mute_after_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(_line(GREETING))
    await reader.readline()
    writer.write(_line({"return": {}}))
    await reader.read()


def test_a_plain_session_times_out_on_an_unanswered_command_and_a_missing_event() -> None:
    async def talk(session: qmp.PlainSession) -> object:
        with pytest.raises(QmpTimeout, match=r"quit: no answer within 0\.1s"):
            await session.execute("quit", timeout=0.1)
        with pytest.raises(QmpTimeout, match=r"no SHUTDOWN event within 0\.1s"):
            await session.wait_event(["SHUTDOWN"], 0.1)
        return None

    asyncio.run(_plain(_mute_after_greeting, talk))
