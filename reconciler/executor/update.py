"""Update: rewrite an applied record with changes that need no new QEMU process (ActionKind.UPDATE).

`protect`, labels, the run strategy, the shutdown timeout and the migration settings are read by the
reconciler, not by QEMU. Left out of the record, prune would not see a `protect: true` added later and
`status` would say "differs" forever. The process is not touched; the record keeps its argv, PID and
restart-forcing fields (policy.record_spec). Crash safety: an intent without argv is written first, so
a run killed midway leaves either the old record or the new one (the write is atomic) plus an intent
that discovery drops once its writer is gone; the next plan then shows the update again.

An UPDATE with live changes (memory, vCPUs within the running QEMU's limits) changes QEMU first:
executor.live.
"""

from __future__ import annotations

from dataclasses import replace

from reconciler.errors import RecordError
from reconciler.executor.context import Context
from reconciler.executor.live import apply_live
from reconciler.executor.outcome import ActionFailed
from reconciler.intent import IntentKind
from reconciler.model import spec_hash
from reconciler.planner.actions import Action
from reconciler.planner.policy import record_spec


async def update_record(ctx: Context, action: Action) -> str:
    node = ctx.node(action.node)
    desired = ctx.spec(action.name)
    try:
        rec = await node.read_record(action.name)
    except RecordError as err:
        raise ActionFailed(f"cannot read the applied record: {err}") from None
    if rec is None:
        raise ActionFailed(f"no applied record on {node.name}")
    live = any(c.live for c in action.changes)
    spec = record_spec(rec.spec, desired, node.name, live=live)
    if spec == rec.spec:
        return f"record on {node.name} already up to date"
    if live:
        if rec.pid <= 0 or rec.stop_cause is not None:
            raise ActionFailed(f"not running on {node.name}: nothing to change live")
        revision = ctx.revision if spec == desired else rec.revision
        return await apply_live(ctx, rec, spec, revision)
    await ctx.intent(IntentKind.UPDATE, action.name, node)
    revision = ctx.revision if spec == desired else rec.revision  # held-back changes: not that revision yet
    await node.write_record(replace(rec, spec=spec, spec_hash=spec_hash(spec), revision=revision))
    await node.remove_intent(action.name)
    return f"record updated on {node.name} (no restart needed)"
