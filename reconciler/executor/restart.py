"""Restart: stop then start with the new spec; or, for a guest that powered itself off with an unchanged
spec (the planner's `in_place` flag), `system_reset` + `cont` of the same QEMU process (same PID, taps
and sockets; no relaunch). `reconciler reboot` is the same reset of a running guest."""

from __future__ import annotations

import time
from dataclasses import replace

from reconciler.errors import QmpError, RecordError
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly, query_status
from reconciler.executor.start import start
from reconciler.executor.stop import stop
from reconciler.intent import IntentKind
from reconciler.model import InstanceSpec, spec_hash
from reconciler.node import Node
from reconciler.planner.actions import Action
from reconciler.records import AppliedRecord


async def restart(ctx: Context, action: Action) -> str:
    spec = ctx.spec(action.name)
    node = ctx.node(action.node)
    if action.in_place:
        return await reset_in_place(ctx, node, spec)
    source = ctx.node(action.source_node) if action.source_node else node
    stopped = await stop(ctx, source, action.name, keep_record=source is node)
    ctx.progress.event(action.name, f"stopped on {source.name} ({stopped.step.value}) "
                                    f"in {stopped.seconds:.2f}s")
    return await start(ctx, node, spec)


async def reset_in_place(ctx: Context, node: Node, spec: InstanceSpec) -> str:
    t0 = time.monotonic()
    ctx.progress.event(spec.name, f"resetting the powered-off guest in place on {node.name}")
    rec = await _system_reset(ctx, node, spec.name)
    # Same process and argv; ignored fields (shutdown timeout, labels, ...) take the new values.
    await node.write_record(replace(rec, spec=spec, spec_hash=spec_hash(spec), revision=ctx.revision))
    await node.remove_intent(spec.name)
    return f"reset in place on {node.name} (pid {rec.pid}) in {time.monotonic() - t0:.2f}s"


async def reboot(ctx: Context, node: Node, name: str) -> str:
    """`reconciler reboot`: reset the guest in the same QEMU process. The record stays as it is: the
    process and its command line do not change, whatever the manifests say now."""
    t0 = time.monotonic()
    ctx.progress.event(name, f"rebooting on {node.name} (system_reset)")
    rec = await _system_reset(ctx, node, name)
    await node.remove_intent(name)
    return f"rebooted on {node.name} (same pid {rec.pid}) in {time.monotonic() - t0:.2f}s"


async def _system_reset(ctx: Context, node: Node, name: str) -> AppliedRecord:
    """system_reset + cont of the recorded, verified process, under a RESET intent (left for the caller
    to remove); ActionFailed unless QEMU says running afterwards."""
    try:
        rec = await node.read_record(name)
    except RecordError as err:
        raise ActionFailed(f"cannot verify the process: {err}") from None
    if rec is None:
        raise ActionFailed(f"no applied record on {node.name}; cannot reset in place")
    handle = await node.process(rec.pid, rec.create_time, rec.argv)
    if handle is None:
        raise ActionFailed(f"QEMU (pid {rec.pid}) is gone; cannot reset in place")
    await handle.close()
    await ctx.intent(IntentKind.RESET, name, node)
    try:
        session = await node.qmp(name, ctx.deadlines.qmp)
    except QmpError as err:
        raise ActionFailed(str(err)) from None
    try:
        await session.execute("system_reset", timeout=ctx.deadlines.qmp)
        await session.execute("cont", timeout=ctx.deadlines.qmp)
        status = await query_status(session, ctx.deadlines.qmp)
    except QmpError as err:
        raise ActionFailed(str(err)) from None
    finally:
        await close_quietly(session)
    if status != "running":
        raise ActionFailed(f"after system_reset + cont QEMU is {status}, not running")
    return rec
