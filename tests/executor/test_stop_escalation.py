"""Stop escalation (pure logic over a fake QMP session and a fake process handle)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from reconciler.actual import StopCause
from reconciler.executor.context import Context, Deadlines
from reconciler.executor.progress import RecordingProgress
from reconciler.executor.stop import Step, Stopped, escalate, stop_process
from reconciler.model import InstanceSpec
from reconciler.records import AppliedRecord

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
    ((signal.SIGTERM,), Step.SIGTERM, [signal.SIGTERM, signal.SIGCONT]),
    ((signal.SIGKILL,), Step.SIGKILL, [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]),
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
    assert step is Step.SIGTERM and proc.signals == [signal.SIGTERM, signal.SIGCONT]


class StoppedProcess(FakeProcess):
    """A SIGSTOPped process: SIGTERM stays pending until SIGCONT; SIGKILL needs no continuing."""

    def __init__(self) -> None:
        super().__init__(dies_on=(signal.SIGKILL,))
        self.pending_term = False

    async def send_signal(self, sig: signal.Signals) -> bool:
        await super().send_signal(sig)
        if sig is signal.SIGTERM:
            self.pending_term = True
        if sig is signal.SIGCONT and self.pending_term:
            self.exit()
        return True

    async def __aenter__(self) -> StoppedProcess:
        return self


def test_a_stopped_process_is_continued_so_that_sigterm_ends_it() -> None:
    async def go() -> tuple[Step, StoppedProcess]:
        proc = StoppedProcess()
        return await escalate(proc, None, graceful=None, d=FAST), proc  # type: ignore[arg-type]

    step, proc = run(go())
    assert step is Step.SIGTERM and proc.signals == [signal.SIGTERM, signal.SIGCONT]


def test_a_process_deaf_to_sigterm_is_killed_within_the_deadlines() -> None:
    async def go() -> tuple[Step, FakeProcess, float]:
        proc = FakeProcess(dies_on=(signal.SIGKILL,))  # e.g. stuck in the kernel: only SIGKILL ends it
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        step = await escalate(proc, None, graceful=None, d=FAST)  # type: ignore[arg-type]
        return step, proc, loop.time() - t0

    step, proc, took = run(go())
    assert step is Step.SIGKILL and proc.signals == [signal.SIGTERM, signal.SIGCONT, signal.SIGKILL]
    assert FAST.term <= took < FAST.term + FAST.kill


class NoQmpNode:
    """Just what stop_process touches on a node; asking it for QMP fails the test."""

    def __init__(self, proc: FakeProcess) -> None:
        self.proc = proc
        self.qmp_asked = 0
        spec = InstanceSpec(name="web", memory_mib=128)
        self.record = AppliedRecord.create(spec, "a", ("qemu",), "7.2", 4242, 1.0, 1.0, None)

    async def read_record(self, instance: str) -> AppliedRecord:
        return self.record

    async def process(self, pid: int, create_time: float, argv: object) -> FakeProcess:
        return self.proc

    async def qmp(self, instance: str, timeout: float, *, patient: bool = False,
                  plain: bool = False) -> FakeSession:
        self.qmp_asked += 1
        raise AssertionError("a stop by signal must not wait on a monitor that does not answer")


@pytest.mark.parametrize("force", [False, True])
def test_stop_by_signal_asks_no_qmp(force: bool) -> None:
    async def go() -> tuple[Stopped, NoQmpNode]:
        node = NoQmpNode(StoppedProcess())
        ctx = Context(nodes={}, specs={}, progress=RecordingProgress(), force=force, deadlines=FAST,
                      owner=(1, 0.0))
        return await stop_process(ctx, node, "web", acpi=True, shutdown_timeout=30.0,  # type: ignore[arg-type]
                                  by_signal=True), node

    stopped, node = run(go())
    assert stopped.step is Step.SIGTERM and stopped.cause is StopCause.RECONCILER
    assert node.qmp_asked == 0
    assert stopped.seconds < FAST.term


@pytest.mark.parametrize(("agent_works", "lingers", "expected", "names"), [
    (True, False, Step.AGENT, ["system_powerdown"]),  # the agent's shutdown ends the process
    (True, True, Step.AGENT, ["system_powerdown", "quit"]),  # guest off, QEMU lingers: quit at once
    (False, False, Step.QUIT, ["system_powerdown", "quit"]),  # no agent answers: quit
])
def test_an_ignored_acpi_press_tries_the_guest_agent_before_quit(
        agent_works: bool, lingers: bool, expected: Step, names: list[str]) -> None:
    from reconciler.guestagent import GuestAgentError

    async def go() -> tuple[Step, FakeSession, list[str]]:
        proc = FakeProcess()
        s = FakeSession({"quit": lambda s, a: proc.exit()})
        asked: list[str] = []

        async def agent() -> object:
            asked.append("guest-shutdown")
            if not agent_works:
                raise GuestAgentError("/x/agent.sock", "guest-shutdown: no answer within 0.2s")
            if lingers:
                s.emit("SHUTDOWN", guest=True)
            else:
                proc.exit()
            return None

        step = await escalate(proc, s, graceful=0.3, d=FAST, agent=agent)  # type: ignore[arg-type]
        return step, s, asked

    step, s, asked = run(go())
    assert step is expected and s.names == names and asked == ["guest-shutdown"]


def test_without_acpi_the_agent_is_the_graceful_step() -> None:
    async def go() -> tuple[Step, FakeSession]:
        proc = FakeProcess()
        s = FakeSession({})

        async def agent() -> object:
            proc.exit()
            return None

        return await escalate(proc, s, graceful=0.3, d=FAST, agent=agent, acpi=False), s  # type: ignore[arg-type]

    step, s = run(go())
    assert step is Step.AGENT and s.names == []
