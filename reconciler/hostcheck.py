"""The plan's host checks, for everything that plans before it acts (plan, apply, the watch daemon):
ask the nodes, add the errors.

The pure steps are in planner.needs and manifest.origin; this is the thin shell around them: one
`check_paths` call per node (all nodes at once), and, only when something is missing, a second read of
the manifest files that declare the fields, to say file:line as validate does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from reconciler.actual import ActualState
from reconciler.model import DesiredState
from reconciler.planner import Plan
from reconciler.planner import disks as disks_mod
from reconciler.planner import needs as needs_mod
from reconciler.planner.actions import DiskChange, PlanProblem

if TYPE_CHECKING:
    from reconciler.node import Node


def check_without_nodes(plan: Plan, desired: DesiredState, actual: ActualState) -> Plan | None:
    """`check_async`'s answer when it has nothing to ask a node (no image to delete, no launch that
    needs files, binaries or bridges: a plan with nothing to change, for one), else None. `plan` on local
    nodes then runs without an event loop."""
    plan = replace(plan, disks=())
    candidates, forbidden = disks_mod.deletion_candidates(plan, desired, actual)
    if candidates or forbidden or needs_mod.requirements(plan, desired, actual):
        return None
    shrunk = disks_mod.shrinks(desired, actual)
    return replace(plan, errors=plan.errors + shrunk) if shrunk else plan


async def check_async(plan: Plan, desired: DesiredState, actual: ActualState,
                      nodes: Mapping[str, Node]) -> Plan:
    """`plan` with an error for each file, binary or bridge its launches need and their nodes lack, and
    the disks its starts create (or an error for each that cannot be created)."""
    plan = replace(plan, disks=())  # found afresh (a saved plan's are what was true when it was made)
    shrunk = disks_mod.shrinks(desired, actual)
    if shrunk:
        plan = replace(plan, errors=plan.errors + shrunk)
    plan = await _deletions(plan, desired, actual, nodes)
    reqs = needs_mod.requirements(plan, desired, actual)
    if not reqs:
        return plan
    from reconciler.node import check_paths_all

    answers = await check_paths_all(nodes, reqs.queries())
    missing = needs_mod.missing(reqs, answers)
    creations = disks_mod.to_create(reqs, answers)
    creates: tuple[DiskChange, ...] = ()
    failed: tuple[PlanProblem, ...] = ()
    if creations:  # only disks about to be created are looked into (their bases, their filesystems)
        import asyncio

        asked = disks_mod.queries(creations)
        checks = await asyncio.gather(*(nodes[n].check_images(asked[n]) for n in asked))
        creates, failed = disks_mod.changes(creations, dict(zip(asked, checks, strict=True)))
        plan = replace(plan, disks=plan.disks + creates)
    if not missing and not failed:
        return plan
    from reconciler.manifest import origin

    refs = {m.need.field for m in missing} | {c.field for c in creations if failed}
    texts = {path: _text(path) for path in origin.files_to_read(refs, desired.sources)}
    origins = origin.locate_fields(refs, desired.sources, texts)
    if failed:
        _, failed = disks_mod.changes(creations, dict(zip(asked, checks, strict=True)), origins)
    return replace(plan, errors=plan.errors + needs_mod.problems(missing, origins) + failed)


async def _deletions(plan: Plan, desired: DesiredState, actual: ActualState,
                     nodes: Mapping[str, Node]) -> Plan:
    """`plan` with a line for each image it deletes: one the reconciler created (its ownership record on
    the node says so), deletePolicy Delete, whose instance is pruned or whose entry was removed."""
    candidates, forbidden = disks_mod.deletion_candidates(plan, desired, actual)
    if not candidates and not forbidden:
        return plan
    asked: dict[str, set[str]] = {}
    for d in candidates:
        if d.node in nodes:
            asked.setdefault(d.node, set()).add(d.path)
    import asyncio

    answers = await asyncio.gather(*(nodes[n].owned_images(paths) for n, paths in asked.items()))
    owned = {n: set(a) for n, a in zip(asked, answers, strict=True)}
    return replace(plan, disks=plan.disks + disks_mod.owned_deletions(candidates, owned),
                   errors=plan.errors + forbidden)


def check(plan: Plan, desired: DesiredState, actual: ActualState, nodes: Mapping[str, Node]) -> Plan:
    import asyncio

    return asyncio.run(check_async(plan, desired, actual, nodes))


async def check_local(plan: Plan, desired: DesiredState, actual: ActualState) -> Plan:
    """`check_async` on the declared nodes, all on this machine (the watch daemon's seam)."""
    from reconciler.node import local_nodes

    nodes = local_nodes([desired.nodes[n] for n in sorted(desired.nodes)])
    return await check_async(plan, desired, actual, nodes)


def _text(path: str) -> str:
    """A manifest file's text, read again ("" when it cannot be read now: the error then points at the
    object's document). An edit since loading can only make a line number stale, never the check."""
    from reconciler.manifest import read_file

    data, _ = read_file(path)
    return data.decode("utf-8-sig", errors="replace") if data is not None else ""
