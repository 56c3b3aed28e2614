"""Update: rewrite an applied record with changes that need no new QEMU process (ActionKind.UPDATE).

`protect`, labels, the run strategy, the shutdown timeout and the migration settings are read by the
reconciler, not by QEMU. Left out of the record, prune would not see a `protect: true` added later and
`status` would say "differs" forever. A provisioned disk whose `size` grew is resized first: live (QMP
block_resize) when the process runs, the image itself (qemu-img resize) when it does not. The process
is not touched otherwise; the record keeps its argv, PID and restart-forcing fields
(policy.record_spec). Crash safety: an intent without argv is written first, so a run killed midway
leaves either the old record or the new one (the write is atomic) plus an intent that discovery drops
once its writer is gone; the next plan then shows the update again.

An UPDATE with live changes (memory, vCPUs within the running QEMU's limits) changes QEMU first:
executor.live.
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.errors import ReconcilerError, RecordError
from reconciler.executor.context import Context
from reconciler.executor.live import apply_live
from reconciler.executor.liveplug import UnplugTimeout
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly
from reconciler.intent import IntentKind
from reconciler.model import InstanceSpec, UpdatePolicy, spec_hash
from reconciler.node import Node
from reconciler.planner.actions import Action
from reconciler.planner.disks import format_size
from reconciler.planner.policy import grown_disks, record_spec
from reconciler.provision.imagecheck import request_of
from reconciler.records import AppliedRecord


async def update_record(ctx: Context, action: Action) -> str:
    node = ctx.node(action.node)
    desired = ctx.spec(action.name)
    try:
        rec = await node.read_record(action.name)
    except RecordError as err:
        raise ActionFailed(f"cannot read the applied record: {err}") from None
    if rec is None:
        raise ActionFailed(f"no applied record on {node.name}")
    live = any(c.live for c in action.changes) or bool(action.leftovers)
    spec = record_spec(rec.spec, desired, node.name, live=live, boot=rec.boot_spec)
    if spec == rec.spec and not action.leftovers:
        return f"record on {node.name} already up to date"
    if live:
        if rec.pid <= 0 or rec.stop_cause is not None:
            raise ActionFailed(f"not running on {node.name}: nothing to change live")
        revision = ctx.revision if spec == desired else rec.revision
        try:
            return await apply_live(ctx, rec, spec, revision)
        except UnplugTimeout as err:
            if desired.update_policy is not UpdatePolicy.IMMEDIATE:
                raise ActionFailed(f"{err.detail}; updatePolicy {desired.update_policy.value}: left for "
                                   "the next restart") from None
            ctx.progress.event(action.name, f"{err.detail}: restarting (updatePolicy Immediate)")
            from reconciler.executor.start import start  # a restart's fallback only: not on every update
            from reconciler.executor.stop import stop

            stopped = await stop(ctx, node, action.name, keep_record=True)
            ctx.progress.event(action.name, f"stopped on {node.name} ({stopped.step.value})")
            return await start(ctx, node, desired)
    await ctx.intent(IntentKind.UPDATE, action.name, node)
    resized = await _grow_disks(ctx, node, action.name, rec, spec)
    revision = ctx.revision if spec == desired else rec.revision  # held-back changes: not that revision yet
    await node.write_record(replace(rec, spec=spec, spec_hash=spec_hash(spec), revision=revision))
    await node.remove_intent(action.name)
    if resized:
        return f"{resized} on {node.name}, record updated (no restart needed)"
    return f"record updated on {node.name} (no restart needed)"


async def _grow_disks(ctx: Context, node: Node, name: str, rec: AppliedRecord, spec: InstanceSpec) -> str:
    """Grow the disks whose declared size grew (policy.grown_disks): live with QMP block_resize when the
    process runs (the guest sees the new size at once), else the image itself (qemu-img resize)."""
    grown = grown_disks(rec.spec.disks, spec.disks)
    if not grown:
        return ""
    try:
        if rec.stop_cause is None:
            session = await node.qmp(name, ctx.deadlines.qmp)
            try:
                for i, disk in grown:
                    await session.execute("block_resize", {"node-name": f"disk{i}-format", "size": disk.size},
                                          timeout=ctx.deadlines.qmp)
            finally:
                await close_quietly(session)
        else:
            for _, disk in grown:
                await node.grow_disk(request_of(disk))
    except ReconcilerError as err:
        raise ActionFailed(f"could not grow disk {grown[0][1].path}: {err}") from None
    return "grew " + ", ".join(f"{d.path} to {format_size(d.size or 0)}" for _, d in grown) + \
        (" live (block_resize)" if rec.stop_cause is None else "")
