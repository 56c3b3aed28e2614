"""Stop escalation (pure logic over a fake QMP session and a fake process handle)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from reconciler.executor.context import Deadlines
from reconciler.executor.stop import Step, escalate

from .fakes import FakeProcess, FakeSession, command_error

FAST = Deadlines(qmp=0.2, quit=0.2, term=0.2, kill=0.2)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_guest_powers_off_then_qemu_lingers_so_quit_at_once() -> None:
    async def go() -> tuple[Step, FakeSession, FakeProcess]:
        proc = FakeProcess()
        s = FakeSession({"system_powerdown": lambda s, a: s.emit("SHUTDOWN", guest=True),
                         "quit": lambda s, a: proc.exit()})
        step = await escalate(proc, s, graceful=5.0, d=FAST)  # type: ignore[arg-type]
        return step, s, proc

    step, s, proc = run(go())
    assert step is Step.ACPI
    assert s.names == ["system_powerdown", "quit"]
    assert proc.signals == []


def test_process_exits_on_acpi_without_quit() -> None:
    async def go() -> tuple[Step, FakeSession]:
        proc = FakeProcess()
        s = FakeSession({"system_powerdown": lambda s, a: proc.exit()})
        return await escalate(proc, s, graceful=5.0, d=FAST), s  # type: ignore[arg-type]

    step, s = run(go())
    assert step is Step.ACPI and s.names == ["system_powerdown"]


def test_guest_ignoring_the_button_is_quit_after_its_timeout() -> None:
    async def go() -> tuple[Step, FakeSession, float]:
        proc = FakeProcess()
        s = FakeSession({"quit": lambda s, a: proc.exit()})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        step = await escalate(proc, s, graceful=0.3, d=FAST)  # type: ignore[arg-type]
        return step, s, loop.time() - t0

    step, s, took = run(go())
    assert step is Step.QUIT and s.names == ["system_powerdown", "quit"]
    assert 0.3 <= took < 1.0


@pytest.mark.parametrize(("dies_on", "expected", "signals"), [
    ((signal.SIGTERM,), Step.SIGTERM, [signal.SIGTERM]),
    ((signal.SIGKILL,), Step.SIGKILL, [signal.SIGTERM, signal.SIGKILL]),
])
def test_quit_ignored_escalates_to_signals(dies_on: tuple[signal.Signals, ...], expected: Step,
                                           signals: list[signal.Signals]) -> None:
    async def go() -> tuple[Step, FakeProcess, FakeSession]:
        proc = FakeProcess(dies_on=dies_on)
        s = FakeSession({"quit": command_error("quit")})
        return await escalate(proc, s, graceful=None, d=FAST), proc, s  # type: ignore[arg-type]

    step, proc, s = run(go())
    assert step is expected and proc.signals == signals
    assert s.names == ["quit"]  # no ACPI: forced / ACPI off


def test_no_qmp_goes_straight_to_sigterm() -> None:
    async def go() -> tuple[Step, FakeProcess]:
        proc = FakeProcess()
        return await escalate(proc, None, graceful=5.0, d=FAST), proc  # type: ignore[arg-type]

    step, proc = run(go())
    assert step is Step.SIGTERM and proc.signals == [signal.SIGTERM]
