"""Stop: graceful first, then ever harder, only ever to the verified process, returning the moment it is gone.

Escalation: `system_powerdown` (ACPI) and wait for the guest's SHUTDOWN event or the process's exit, up to
the instance's shutdown timeout; with guestAgent, then `guest-shutdown` through the agent, as long again;
then `quit`; then SIGTERM; then SIGKILL. ACPI off, or --force, starts at
`quit`. QEMU runs with -no-shutdown, so after the guest's SHUTDOWN event the process stays: `quit` is sent
at once. Signals go through a pidfd opened and verified (start time + argv) before use; every wait is on
that pidfd (readable the instant the process exits; a zombie counts) under a deadline.

A process whose QMP does not answer (planned with `by_signal`, apply --force) is stopped by signal alone:
SIGTERM, then SIGKILL. SIGTERM is followed by SIGCONT: a stopped process (SIGSTOP, a debugger's job
control) would hold SIGTERM pending until continued; continued, QEMU acts on it and exits cleanly,
flushing its disks. One that still does not exit gets SIGKILL, which needs no continuing.

Afterwards the runtime files go. The record is kept, marked with why the instance stopped (so a Halted
instance plans as no-op and `status` can say "stopped by the reconciler"), unless the copy is being
discarded (a duplicate, a pruned orphan, a migration or relocation source): then it goes too.
"""

from __future__ import annotations

import asyncio
import enum
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from reconciler.actual import StopCause
from reconciler.errors import QmpDisconnected, QmpError, ReconcilerError, RecordError
from reconciler.executor.context import Context, Deadlines
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly, query_status
from reconciler.intent import IntentKind
from reconciler.model import InstanceSpec, spec_hash
from reconciler.node import Node, Process
from reconciler.planner.policy import record_spec
from reconciler.qmp import QmpSession
from reconciler.records import AppliedRecord
from reconciler.values import Value

T = TypeVar("T")
_NO_GUEST = frozenset({"inmigrate", "postmigrate", "shutdown", "guest-panicked", "internal-error"})


class Step(enum.StrEnum):
    """The step of the escalation that ended the process."""

    ACPI = "ACPI power-off"
    AGENT = "guest agent shutdown"  # the ACPI press was ignored (or ACPI is off); the agent was not
    QUIT = "quit"
    SIGTERM = "SIGTERM"
    SIGKILL = "SIGKILL"
    ALREADY_GONE = "already gone"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Stopped(Value):
    """How an instance stopped: the step that ended it, why, and how long it took."""

    step: Step
    cause: StopCause
    seconds: float


async def first(*aws: Awaitable[T]) -> tuple[int, T | BaseException]:
    """Run awaitables concurrently; the index and result (or exception) of the first to finish. The
    others are cancelled."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        i = next(i for i, t in enumerate(tasks) if t in done)
        exc = tasks[i].exception()
        return i, (exc if exc is not None else tasks[i].result())
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def escalate(handle: Process, session: QmpSession | None, *, graceful: float | None,
                   d: Deadlines, agent: Callable[[], Awaitable[object]] | None = None,
                   acpi: bool = True) -> Step:
    """End the pinned process: ACPI (if `graceful` seconds are given and `acpi`), then `agent`'s
    guest-shutdown (if given, with as long again), quit, SIGTERM, SIGKILL."""
    off: Step | None = None  # the graceful step that powered the guest off while QEMU lingers
    if session is not None and graceful is not None:
        steps: list[tuple[Step, Callable[[], Awaitable[object]]]] = []
        if acpi:
            steps.append((Step.ACPI, lambda: session.execute("system_powerdown", timeout=d.qmp)))
        if agent is not None:
            steps.append((Step.AGENT, agent))
        for step, ask in steps:
            exited, off = await _graceful(handle, session, graceful, step, ask)
            if exited:
                return step
            if off is not None:
                break
    if session is not None:
        try:
            await session.execute("quit", timeout=d.qmp)
        except QmpDisconnected:
            pass  # it exited before answering
        except QmpError:
            pass
        if await handle.wait_exit(d.quit):
            return off or Step.QUIT
    await handle.send_signal(signal.SIGTERM)
    await handle.send_signal(signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
    if await handle.wait_exit(d.term):
        return Step.SIGTERM
    await handle.send_signal(signal.SIGKILL)
    if await handle.wait_exit(d.kill):
        return Step.SIGKILL
    raise ActionFailed(f"pid {handle.pid} survived SIGKILL for {d.kill:g}s")


async def _graceful(handle: Process, session: QmpSession, graceful: float, step: Step,
                    ask: Callable[[], Awaitable[object]]) -> tuple[bool, Step | None]:
    """Ask the guest to power off (`ask`) and wait up to `graceful` seconds: (exited, `step` when the
    guest is off but QEMU lingers under -no-shutdown, so quit follows at once and it still counts)."""
    try:
        await ask()
    except ReconcilerError:
        return False, None  # not asked (no answer): the next step
    i, res = await first(handle.wait_exit(graceful), session.wait_event(["SHUTDOWN"], graceful))
    if await handle.exited():
        return True, step
    return False, step if i == 1 and not isinstance(res, BaseException) else None


async def stop_process(ctx: Context, node: Node, name: str, *, acpi: bool,
                       shutdown_timeout: float, by_signal: bool = False) -> Stopped:
    """Stop the instance's recorded process on `node` (no file changes). ActionFailed if it cannot.
    `by_signal`: its QMP does not answer, so none is tried (SIGTERM, then SIGKILL). A process started
    with the guest agent's channel (its record says so) gets guest-shutdown when ACPI did not stop it."""
    t0 = time.monotonic()
    try:
        rec = await node.read_record(name)
    except RecordError as err:
        raise ActionFailed(f"cannot verify the process: {err}") from None
    if rec is None:
        pids = await node.live_pids(name)
        if pids:
            raise ActionFailed(f"pid {pids[0]} runs without an applied record; not touching it")
        return Stopped(Step.ALREADY_GONE, StopCause.UNKNOWN, 0.0)
    handle = await node.process(rec.pid, rec.create_time, rec.argv)
    if handle is None:
        return Stopped(Step.ALREADY_GONE, rec.stop_cause or StopCause.UNKNOWN, 0.0)
    async with handle:
        session: QmpSession | None = None
        if not by_signal:
            try:
                # Forced, it is query-status and quit: a plain session (no qemu.qmp client) will do.
                session = await node.qmp(name, ctx.deadlines.qmp, plain=ctx.force)
            except QmpError:
                session = None
        try:
            status = ""
            if session is not None:
                try:
                    status = await query_status(session, ctx.deadlines.qmp)
                except QmpError:
                    status = ""
            cause = StopCause.GUEST if status == "shutdown" else StopCause.RECONCILER
            agent = rec.spec.guest_agent

            async def shutdown_by_agent() -> object:
                return await node.guest_agent(name, "guest-shutdown", ctx.deadlines.qmp)

            graceful = shutdown_timeout if (acpi or agent) and not ctx.force and status not in _NO_GUEST \
                else None
            step = await escalate(handle, session, graceful=graceful, d=ctx.deadlines, acpi=acpi,
                                  agent=shutdown_by_agent if agent else None)
        finally:
            if session is not None:
                await close_quietly(session)
    return Stopped(step, cause, time.monotonic() - t0)


async def stop(ctx: Context, node: Node, name: str, *, keep_record: bool, by_signal: bool = False) -> Stopped:
    """The stop action on one node: intent, escalation, files. Returns how it ended."""
    spec = ctx.specs.get(name)
    rec = await _record_or_none(node, name)
    used = spec or (rec.spec if rec is not None else None)
    acpi = used.acpi if used is not None else True
    timeout = used.shutdown_timeout if used is not None else 30.0
    how = " (by signal: QMP unresponsive)" if by_signal else " (forced)" if ctx.force else ""
    ctx.progress.event(name, f"stopping on {node.name}{how}")
    await ctx.intent(IntentKind.STOP, name, node)
    stopped = await stop_process(ctx, node, name, acpi=acpi, shutdown_timeout=timeout, by_signal=by_signal)
    await finish(node, name, stopped.cause, keep_record=keep_record, desired=spec)
    return stopped


async def finish(node: Node, name: str, cause: StopCause, *, keep_record: bool,
           desired: InstanceSpec | None = None) -> None:
    """After the process is gone: clean its files; keep the record marked with `cause`, or drop it.

    A kept record also takes `desired`'s fields that need no restart (the run strategy that stopped it,
    say), so that the next plan compares later edits with what was applied."""
    if not keep_record:
        await node.remove_instance(name)
        return
    rec = await _record_or_none(node, name)
    await node.clean_runtime_files(name)
    if rec is None:
        return
    kept = rec if rec.stop_cause is not None else rec.stopped(cause, time.time())
    if desired is not None:
        spec = record_spec(rec.spec, desired, node.name)
        if spec != rec.spec:
            kept = replace(kept, spec=spec, spec_hash=spec_hash(spec))
    if kept != rec:
        await node.write_record(kept)


async def _record_or_none(node: Node, name: str) -> AppliedRecord | None:
    try:
        return await node.read_record(name)
    except RecordError:
        return None
