"""The disks a plan creates before its starts, and the plan errors for those it cannot create. Pure.

A disk entry with `size` or `baseImage` whose file is missing on the node it starts on is created by the
start (a qcow2 overlay on the base, or a blank disk). The plan lists each with its size and base, so
nothing is created that the plan did not show; what would fail (a missing or unusable base, a base being
written, no such directory, too little room on the filesystem) is a plan error naming the file.

Around the one I/O step (`Node.check_images`, one call per node, only for the disks to create): `to_create`
(from the path answers the host checks already have), `queries` (what to ask), `changes` (plan lines and
errors from the answers).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from reconciler.actual import ActualInstance, ActualState
from reconciler.model import DeletePolicy, DesiredState, Disk, FieldRef, InstanceSpec, Kind, SourceRef
from reconciler.pathinfo import PathInfo, PathKind
from reconciler.planner.actions import (
    Action,
    ActionKind,
    DiskChange,
    DiskOp,
    Plan,
    PlanProblem,
    ProblemKind,
    Reason,
)
from reconciler.planner.needs import Requirements, field_text
from reconciler.values import Value

if TYPE_CHECKING:
    from reconciler.provision.imagecheck import ImageCheck, ImageQuery


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Creation(Value):
    """Disk `index` of `instance`, missing on `node`: the plan creates it."""

    instance: str
    node: str
    index: int
    disk: Disk

    @property
    def field(self) -> FieldRef:
        attribute = "baseImage" if self.disk.base_image is not None else "size"
        return FieldRef(Kind.INSTANCE, self.instance, ("spec", "disks", self.index, attribute))


def to_create(reqs: Requirements, answers: Mapping[str, Mapping[str, PathInfo]]) -> tuple[Creation, ...]:
    """The provisioned disks of the plan's launches that are missing on their nodes, in plan order."""
    out = []
    for spec, node in reqs.launches:
        if not reqs.creates(spec, node):
            continue
        said = answers.get(node.name, {})
        for i, disk in enumerate(spec.disks):
            info = said.get(disk.path) if disk.provisioned else None
            if info is not None and info.kind is PathKind.MISSING:
                out.append(Creation(spec.name, node.name, i, disk))
    return tuple(out)


def queries(creations: tuple[Creation, ...]) -> dict[str, list[ImageQuery]]:
    """Node name -> the disks to ask it about."""
    from reconciler.provision.imagecheck import ImageQuery  # only a plan that creates disks asks

    out: dict[str, list[ImageQuery]] = defaultdict(list)
    for c in creations:
        out[c.node].append(ImageQuery(c.disk.path, c.disk.base_image, c.disk.size))
    return dict(out)


def changes(creations: tuple[Creation, ...], checks: Mapping[str, Mapping[str, ImageCheck]],
            origins: Mapping[FieldRef, SourceRef] | None = None
            ) -> tuple[tuple[DiskChange, ...], tuple[PlanProblem, ...]]:
    """The plan's CREATE lines, and an error for each disk that cannot be created as it says."""
    origins = origins or {}
    made: list[tuple[Creation, DiskChange, ImageCheck]] = []
    problems: list[PlanProblem] = []

    def fail(c: Creation, detail: str) -> None:
        problems.append(PlanProblem(ProblemKind.DISK_CREATE, f"instance {c.instance}",
                                    f"{field_text(c.field.path)}: {detail}", origins.get(c.field)))

    for c in creations:
        check = checks.get(c.node, {}).get(c.disk.path)
        if check is None:
            fail(c, f"disk image {c.disk.path}: node {c.node} gave no answer for it")
            continue
        if check.error:
            fail(c, check.error)
            continue
        size = c.disk.size if c.disk.size is not None else check.base_size
        if c.disk.size is not None and check.base_size is not None and c.disk.size < check.base_size:
            fail(c, f"disk image {c.disk.path}: size {format_size(c.disk.size)} is below the base image's "
                    f"virtual size ({format_size(check.base_size)}); an overlay cannot shrink its base")
            continue
        made.append((c, DiskChange(c.instance, c.node, c.disk.path, DiskOp.CREATE, size, c.disk.base_image,
                                   check.base_format, c.disk.format.value), check))
    problems += _room(made, origins)
    failed = {p.subject for p in problems}
    problems.sort(key=lambda p: (p.subject, p.detail))
    return tuple(d for c, d, _ in made if f"instance {c.instance}" not in failed), tuple(problems)


def _room(made: list[tuple[Creation, DiskChange, ImageCheck]],
          origins: Mapping[FieldRef, SourceRef]) -> Iterator[PlanProblem]:
    """Disks created on one filesystem must fit its free space together, each at its full virtual size
    (images are sparse, but a guest may fill them)."""
    groups: dict[tuple[str, int], list[tuple[Creation, DiskChange, ImageCheck]]] = defaultdict(list)
    for item in made:
        groups[(item[0].node, item[2].device)].append(item)
    for items in groups.values():
        need = sum(d.size or 0 for _, d, _ in items)
        free = items[0][2].free
        if need <= free:
            continue
        together = f" ({len(items)} disks created there need {format_size(need)})" if len(items) > 1 else ""
        for c, d, _ in items:
            yield PlanProblem(ProblemKind.DISK_CREATE, f"instance {c.instance}",
                              f"{field_text(c.field.path)}: disk image {d.path}: needs "
                              f"{format_size(d.size or 0)}{together}, but its filesystem has "
                              f"{format_size(free)} free",
                              origins.get(c.field))


def format_size(nbytes: int) -> str:
    """Bytes in the largest binary unit that divides them: 67108864 -> "64 MiB"."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes and nbytes % size == 0:
            return f"{nbytes // size} {unit}"
    return f"{nbytes} B" if nbytes < 1 << 20 else f"{nbytes / (1 << 20):.1f} MiB"


# --- deletions: images the reconciler created, deletePolicy Delete -------------------------------


def deletion_candidates(plan: Plan, desired: DesiredState, actual: ActualState
                        ) -> tuple[tuple[DiskChange, ...], tuple[PlanProblem, ...]]:
    """The images `plan` would delete, if the reconciler created them (the host checks keep only those
    its ownership records name): the Delete disks of a pruned instance, and those whose entry was removed
    from an instance this plan restarts, that is not running, or whose live update unplugs them.
    `protect: true` forbids a deletion."""
    out: list[DiskChange] = []
    problems: list[PlanProblem] = []
    acting = {(a.name, a.source_node or a.node): a for a in plan.actions}
    for rec in actual.instances:
        if rec.spec is None:
            continue
        doomed = [d for d in rec.spec.disks if d.provisioned and d.delete_policy is DeletePolicy.DELETE]
        if not doomed:
            continue
        spec = desired.instances.get(rec.name)
        if spec is None:
            if not plan.prune or rec.spec.protect:
                continue
            stop = acting.get((rec.name, rec.node))
            if rec.state.has_process and (stop is None or stop.kind is not ActionKind.STOP):
                continue  # left running (targets, an unresponsive QMP): nothing is deleted under it
            out += [DiskChange(rec.name, rec.node, d.path, DiskOp.DELETE, reason="instance pruned")
                    for d in doomed]
            continue
        kept = {d.path for d in spec.disks}
        removed = [d for d in doomed if d.path not in kept]
        if not removed:
            continue
        action = acting.get((rec.name, rec.node))
        relaunched = action is not None and action.kind is ActionKind.RESTART and not action.in_place
        if rec.state.has_process and not relaunched:
            removed = [d for d in removed if d in _unplugged(action, rec, spec)]
            if not removed:
                continue  # still in use by the running QEMU; deleted once a plan restarts it without
        for d in removed:
            if spec.protect:
                problems.append(PlanProblem(ProblemKind.PROTECTED, f"instance {rec.name}",
                                            f"protect: true; deletePolicy Delete would delete disk image "
                                            f"{d.path} (its entry was removed)"))
            else:
                out.append(DiskChange(rec.name, rec.node, d.path, DiskOp.DELETE, reason="disk entry removed"))
    return tuple(sorted(out, key=lambda d: (d.instance, d.node, d.path))), tuple(problems)


def _unplugged(action: Action | None, rec: ActualInstance, spec: InstanceSpec) -> tuple[Disk, ...]:
    """The disks a live update (this plan's UPDATE of `rec`) removes from its QEMU: free once it is done
    (deletions run after the instance's actions, and not when one failed)."""
    if action is None or action.kind is not ActionKind.UPDATE or action.reason is not Reason.LIVE_UPDATE \
            or rec.spec is None or not any(c.live and c.path.startswith("disks") for c in action.changes):
        return ()
    from reconciler import devplug

    change = devplug.device_change(rec.boot_spec or rec.spec, rec.spec, spec)
    return change.remove_disks if change is not None else ()


def owned_deletions(candidates: tuple[DiskChange, ...],
                    owned: Mapping[str, Collection[str]]) -> tuple[DiskChange, ...]:
    """The candidates whose image the node's ownership records name (node -> owned paths)."""
    return tuple(d for d in candidates if d.path in owned.get(d.node, ()))


def shrinks(desired: DesiredState, actual: ActualState) -> tuple[PlanProblem, ...]:
    """A disk whose declared size went below the recorded one: refused (a shrink would cut the guest's
    data past the new end); growing is an in-place update (block_resize)."""
    out = []
    for rec in actual.instances:
        spec = desired.instances.get(rec.name)
        if rec.spec is None or spec is None:
            continue
        before = {d.path: d.size for d in rec.spec.disks}
        for i, disk in enumerate(spec.disks):
            old = before.get(disk.path)
            if old is not None and disk.size is not None and disk.size < old:
                out.append(PlanProblem(ProblemKind.REFUSED, f"instance {rec.name}",
                                       f"spec.disks[{i}].size: {format_size(old)} -> "
                                       f"{format_size(disk.size)}: a disk is never shrunk (the data past "
                                       "the new end would be lost)"))
    return tuple(out)
