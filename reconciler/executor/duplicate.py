"""Resolving an interrupted migration: two copies of one instance, one an incoming target.

An apply (or the daemon) killed mid-migration leaves QEMU's own migration running: the source keeps
streaming to the `-incoming` target and may finish at any moment. The planner sees the target as a
duplicate and stops it; but if the migration completes between discovery and that stop, the target holds
the guest and the source is an empty shell (`postmigrate`): stopping the target would lose the instance.

So before stopping an incoming target, settle the migration on the source first: `migrate_cancel` it and
wait for its end. Cancelled (or never running): the target is an empty shell, stop it as planned.
Completed: the guest now lives on the target; stop the source's shell instead. A later migrate action
for the instance then finds it already where it should be (`migrate.already_there`).
"""

from __future__ import annotations

from reconciler.errors import QmpError
from reconciler.executor.context import Context
from reconciler.executor.migrate import cancel_migration
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly, query_status
from reconciler.executor.stop import stop
from reconciler.node import Node, live_copies
from reconciler.qmp import QmpSession


async def stop_duplicate(ctx: Context, node: Node, name: str) -> str:
    """The planner's duplicate stop of `name` on `node`, made safe against a migration in flight.

    The copies' run states are read again now: discovery may be a migration's completion ago.
    - this copy is still `inmigrate`: settle the other copies' outgoing migrations first (cancel);
    - this copy runs and another is `postmigrate`: the migration completed since discovery.
    Either way, when the guest ended up here, the other copy is the one stopped. And when this copy is
    the `postmigrate` source of a completed offline migration, the other copy got the guest paused, as
    the source was: it is continued before this one goes.
    """
    elsewhere = [n for n in ctx.nodes.values() if n.name != node.name]
    others = [ctx.node(n) for n, _ in await live_copies(elsewhere, name)]
    here = await _status(ctx, node, name)
    for other in others:
        there = await _status(ctx, other, name)
        moved = (here == "inmigrate" and there != "inmigrate"
                 and await _settle_migration(ctx, other, name) == "completed")
        if moved or (here in ("running", "paused") and there == "postmigrate"):
            await _resume_target(ctx, node, name)
            done = await stop(ctx, other, name, keep_record=False)
            return (f"an interrupted migration had completed: kept the copy on {node.name}, "
                    f"stopped the one on {other.name} ({done.step.value}) in {done.seconds:.2f}s")
        if here == "postmigrate" and there == "paused":
            await _resume_target(ctx, other, name)  # this copy's completed offline migration paused it
    done = await stop(ctx, node, name, keep_record=False)
    return f"stopped on {node.name} ({done.step.value}) in {done.seconds:.2f}s"


async def _status(ctx: Context, node: Node, name: str) -> str:
    """QEMU's run state of the copy on `node`, "" when it does not answer."""
    try:
        session = await node.qmp(name, ctx.deadlines.qmp)
    except QmpError:
        return ""
    try:
        return await query_status(session, ctx.deadlines.qmp)
    except QmpError:
        return ""
    finally:
        await close_quietly(session)


async def _resume_target(ctx: Context, node: Node, name: str) -> None:
    """An offline migration completes with the target paused, as its source was: let it run."""
    try:
        session = await node.qmp(name, ctx.deadlines.qmp)
    except QmpError as err:
        raise ActionFailed(f"the migrated copy on {node.name}: {err}") from None
    try:
        await _resume_if_paused(session, ctx)
    except QmpError as err:
        raise ActionFailed(f"the migrated copy on {node.name}: {err}") from None
    finally:
        await close_quietly(session)


async def _settle_migration(ctx: Context, source: Node, name: str) -> str:
    """End the source's outgoing migration: its final status ("completed", "cancelled", "none", ...)."""
    try:
        session = await source.qmp(name, ctx.deadlines.qmp)
    except QmpError as err:
        raise ActionFailed(f"cannot reach the migration source on {source.name}: {err}") from None
    try:
        status = await cancel_migration(session, ctx)
        if status is None:
            raise ActionFailed(f"the migration from {source.name} did not end within "
                               f"{ctx.deadlines.cancel:g}s of migrate_cancel")
        if status != "completed":
            await _resume_if_paused(session, ctx)
        return status
    except QmpError as err:
        raise ActionFailed(f"migration source on {source.name}: {err}") from None
    finally:
        await close_quietly(session)


async def _resume_if_paused(session: QmpSession, ctx: Context) -> None:
    """An offline migration pauses its source first; a cancelled one must not leave it paused.

    The killed run's MIGRATE_SOURCE intent (which said so) is gone by now, cleaned by discovery with its
    dead writer; a source paused while an incoming target of it exists was paused for the migration.
    """
    if await query_status(session, ctx.deadlines.qmp) == "paused":
        await session.execute("cont", timeout=ctx.deadlines.qmp)
