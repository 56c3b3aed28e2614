"""Running a plan: phases in order; within a phase, different instances in parallel (at most `parallel`
actions at once), one instance's actions strictly in order. A failed action fails only its instance:
that instance's later actions are skipped, everything else goes on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from reconciler.errors import ReconcilerError
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionFailed, ActionResult, DiskResult, Status, Summary
from reconciler.planner.actions import Action, ActionKind, DiskChange, DiskOp, Plan, Reason

# Halted stops keep the record, and so does `reconciler stop` (marked stopped); other stops discard
# the copy (prune, duplicate).
_KEEP_RECORD = frozenset({Reason.WANTED_STOPPED, Reason.QMP_UNRESPONSIVE, Reason.REQUESTED})


async def run_plan(plan: Plan, ctx: Context, parallel: int = 4) -> Summary:
    slots = asyncio.Semaphore(max(parallel, 1))
    failed: set[str] = set()
    results: list[ActionResult] = []
    for phase in plan.phases:
        groups: dict[str, list[Action]] = {}
        for action in phase:
            if action.kind is not ActionKind.NOOP:
                groups.setdefault(action.name, []).append(action)

        async def run_group(actions: Sequence[Action]) -> None:
            for action in actions:
                if action.name in failed:
                    results.append(ActionResult(action, Status.SKIPPED, "an earlier action failed"))
                    continue
                async with slots:
                    result = await run_action(ctx, action)
                results.append(result)
                if not result.ok:
                    failed.add(action.name)

        await asyncio.gather(*(run_group(g) for g in groups.values()))
    disks = [await delete_disk(ctx, d, d.instance in failed) for d in plan.disks if d.op is DiskOp.DELETE]
    return Summary(tuple(results), tuple(disks))


async def delete_disk(ctx: Context, change: DiskChange, skip: bool) -> DiskResult:
    """Delete an image the plan says the reconciler created, after its instance's actions all succeeded.
    The node deletes it only if it still is that very file (a symlink or other file swapped in is
    refused, untouched)."""
    if skip:
        return DiskResult(change, Status.SKIPPED, "an earlier action failed")
    try:
        deleted = await ctx.node(change.node).delete_disk(change.path)
    except (ReconcilerError, ActionFailed) as err:
        detail = err.detail if isinstance(err, ActionFailed) else str(err)
        ctx.progress.event(change.instance, f"delete disk image FAILED: {detail}")
        return DiskResult(change, Status.FAILED, detail)
    detail = f"deleted disk image {change.path}" if deleted else \
        f"disk image {change.path} was not created by the reconciler; kept"
    ctx.progress.event(change.instance, detail)
    return DiskResult(change, Status.DONE, detail, deleted=deleted)


async def run_action(ctx: Context, action: Action) -> ActionResult:
    t0 = time.monotonic()
    try:
        detail = await _dispatch(ctx, action)
    except ActionFailed as err:
        return _failed(ctx, action, err.detail, t0)
    except ReconcilerError as err:
        return _failed(ctx, action, str(err), t0)
    except Exception as err:  # a bug must not abandon the other instances' actions
        return _failed(ctx, action, f"internal error: {type(err).__name__}: {err}", t0)
    ctx.progress.event(action.name, detail)
    return ActionResult(action, Status.DONE, detail, time.monotonic() - t0)


def _failed(ctx: Context, action: Action, detail: str, t0: float) -> ActionResult:
    ctx.progress.event(action.name, f"{action.kind.value} FAILED: {detail}")
    return ActionResult(action, Status.FAILED, detail, time.monotonic() - t0)


async def _dispatch(ctx: Context, action: Action) -> str:
    # Each kind imports its own module: a run of stops does not import the launch machinery.
    if action.kind is ActionKind.START:
        from reconciler.executor import start

        return await start.start(ctx, ctx.node(action.node), ctx.spec(action.name))
    if action.kind is ActionKind.STOP and action.reason is Reason.DUPLICATE:
        from reconciler.executor import duplicate

        return await duplicate.stop_duplicate(ctx, ctx.node(action.node), action.name)
    if action.kind is ActionKind.STOP:
        from reconciler.executor import stop

        node = ctx.node(action.node)
        done = await stop.stop(ctx, node, action.name, keep_record=action.reason in _KEEP_RECORD,
                               by_signal=action.by_signal)
        return f"stopped on {node.name} ({done.step.value}) in {done.seconds:.2f}s"
    if action.kind is ActionKind.RESTART:
        from reconciler.executor import restart

        return await restart.restart(ctx, action)
    if action.kind is ActionKind.MIGRATE:
        from reconciler.executor import migrate

        return await migrate.migrate(ctx, action)
    if action.kind is ActionKind.REBOOT:
        from reconciler.executor import restart

        return await restart.reboot(ctx, ctx.node(action.node), action.name)
    if action.kind is ActionKind.UPDATE:
        from reconciler.executor import update

        return await update.update_record(ctx, action)
    raise ActionFailed(f"unknown action {action.kind.value}")
