"""End-to-end: the QMP adapter against a real (paused) QEMU and a socket that never answers; every
failure is a typed QmpError subclass, and nothing waits past its deadline."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from reconciler import model, qmp
from reconciler.errors import QmpCommandError, QmpConnectError, QmpTimeout

from .helpers import Reaper, short_state_dir, start

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


@pytest.fixture
def paused_qmp() -> Iterator[str]:
    reaper = Reaper()
    try:
        for d in short_state_dir():
            node = model.NodeSpec(name="n1", state_dir=d, accelerator=model.Accelerator.TCG)
            spec = model.InstanceSpec(name="vm1", memory_mib=16, serial_console=False, extra_args=("-S",))
            _, paths = start(reaper, spec, node)
            yield paths.qmp
    finally:
        reaper.reap()


def test_execute_events_and_errors(paused_qmp: str) -> None:
    async def scenario() -> None:
        async with qmp.session(paused_qmp, timeout=5) as s:
            assert (await s.execute("query-status"))["status"] == "prelaunch"
            with pytest.raises(QmpCommandError) as err:
                await s.execute("no-such-command")
            assert err.value.error_class == "CommandNotFound"
            assert str(err.value).startswith(f"QMP {paused_qmp}: no-such-command: CommandNotFound: ")
            began = time.monotonic()
            with pytest.raises(QmpTimeout, match=r"no RESUME event within 0\.2s"):
                await s.wait_event(["RESUME"], 0.2)
            assert time.monotonic() - began < 1.0
            await s.execute("cont")
            event = await s.wait_event(["RESUME"], 10)
            assert event.name == "RESUME" and event.timestamp > 0
        assert await qmp.query_status(paused_qmp, 5) == "running"

    asyncio.run(scenario())


def test_connect_failures_are_typed(tmp_path: object) -> None:
    with pytest.raises(QmpConnectError, match="No such file or directory"):
        asyncio.run(qmp.connect("/nonexistent/qmp.sock", 1))
    for d in short_state_dir():
        path = f"{d}/hung.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        try:
            began = time.monotonic()
            with pytest.raises(QmpTimeout, match=r"no greeting within 0\.3s"):
                asyncio.run(qmp.connect(path, 0.3))
            assert time.monotonic() - began < 1.5
        finally:
            server.close()


def test_expect_name_refuses_another_instances_monitor(paused_qmp: str) -> None:
    async def scenario() -> None:
        s = await qmp.connect(paused_qmp, 5)
        await qmp.expect_name(s, "vm1", 5)  # its own: the session stays open and usable
        assert (await s.execute("query-status"))["status"] == "prelaunch"
        with pytest.raises(QmpConnectError, match=r"monitor of 'vm1', not of 'vm2': refusing to use it$"):
            await qmp.expect_name(s, "vm2", 5)
        async with qmp.session(paused_qmp, timeout=5) as again:  # closed: the one client slot is free
            assert (await again.execute("query-name"))["name"] == "vm1"

    asyncio.run(scenario())
