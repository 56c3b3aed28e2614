"""Live update: disks, NICs, the VNC password, memory and vCPUs changed in the running QEMU, then the
applied record (an UPDATE action with live changes; the rules: reconciler.hotplug, reconciler.devplug).

Steps, each skipped when QEMU already shows it done (so a run killed halfway is finished by the next):
1. The intent: an UPDATE intent carrying the spec being applied, written before QEMU is touched.
1a. Disks and NICs added or removed, disk caches reopened (executor.liveplug); a provisioned disk that
   grew is resized (block_resize); a new VNC password file is read and set (change-vnc-password).
2. Read back what QEMU has: base and plugged memory (query-memory-size-summary), the DIMMs
   (query-memory-devices), the CPU slots (query-hotpluggable-cpus), online vCPUs (query-cpus-fast) and
   the memory backends (query-memdev: one of ours without its DIMM, left by a run killed between the
   two commands, is deleted, `object-del`, so its id is free again).
3. Memory above what is plugged: `object-add` a memory-backend-ram and `device_add` a pc-dimm on it.
4. The balloon to the spec's memory (`balloon`), confirmed by the first BALLOON_CHANGE event at the
   target or closer to it than the balloon was when set, within Deadlines.balloon (see _balloon).
5. vCPUs below the spec: `device_add` the free CPU slots, lowest first; above it: `device_del` of the
   hotplugged ones, highest first, each awaited (DEVICE_DELETED) within Deadlines.unplug.
6. Read back again and compare with the spec: memory plugged, balloon (at the target, or on its way
   there), vCPUs. A mismatch fails the action with what QEMU says; the record is left as it was, so the
   next plan shows the change again.
7. The record: `spec` the new one, `boot_spec` what argv was built from, `plugged` what QEMU reported
   (DIMMs, CPUs, and the disks and NICs added live with their slots).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from reconciler import devplug, hotplug, qemuview
from reconciler.errors import QmpError, SecretFileError
from reconciler.executor import liveplug
from reconciler.executor.context import Context
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly
from reconciler.intent import IntentKind
from reconciler.model import InstanceSpec, spec_hash
from reconciler.node import Node
from reconciler.qmp import QmpSession
from reconciler.records import AppliedRecord
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class _Moving(Value):
    """A balloon the guest is still moving: where it was when it was set, and where the event saw it."""

    from_mib: int
    at_mib: int

    def passes(self, balloon_mib: int | None, spec: InstanceSpec) -> bool:
        """Whether a balloon read back is on the way from where it was to the spec's memory."""
        low, high = sorted((self.from_mib, spec.memory_mib))
        return balloon_mib is not None and low <= balloon_mib <= high


async def apply_live(ctx: Context, rec: AppliedRecord, spec: InstanceSpec, revision: str | None) -> str:
    """Make the running QEMU of `rec` match `spec`'s memory and vCPUs, then write the record."""
    node = ctx.node(rec.node)
    boot = rec.launched_spec
    if spec.max_memory_mib != boot.max_memory_mib or spec.max_vcpus != boot.max_vcpus:
        raise ActionFailed("maxMemory/maxVcpus differ from what QEMU was started with: a restart is needed")
    await ctx.intent(IntentKind.UPDATE, rec.name, node, spec=spec)
    t0 = time.monotonic()
    try:
        steps, plugged = await _change(ctx, node, rec, spec)
    except ActionFailed:
        await node.remove_intent(rec.name)  # the record still says what was applied: the plan shows it
        raise
    await node.write_record(replace(rec, spec=spec, spec_hash=spec_hash(spec), revision=revision,
                                    boot_spec=boot, plugged=plugged))
    await node.remove_intent(rec.name)
    done = ", ".join(steps) or "QEMU already had it"
    return f"updated in place on {node.name} ({done}) in {time.monotonic() - t0:.2f}s"


async def _change(ctx: Context, node: Node, rec: AppliedRecord,
                  spec: InstanceSpec) -> tuple[list[str], hotplug.Plugged]:
    """Steps 1a-6: the change made in QEMU and read back (ActionFailed when QEMU does not show it)."""
    try:
        session = await node.qmp(rec.name, ctx.deadlines.qmp)
    except QmpError as err:
        raise ActionFailed(f"QMP: {err}") from None
    boot = rec.launched_spec
    sizes = boot.max_memory_mib is not None or boot.max_vcpus is not None  # else nothing to change there
    pci = devplug.hotplug_machine(boot.machine)  # else no disk or NIC was or can be plugged live
    try:
        steps = (await liveplug.converge(ctx, node, session, rec, spec))[0] if pci else []
        steps += await _grow(ctx, session, rec, spec)
        steps += await _vnc_password(ctx, node, session, rec.spec, spec)
        moving = None
        if sizes:
            more, moving = await _converge(ctx, session, spec)
            steps += more
        seen = await _read(ctx, session) if sizes else None
        devices = await liveplug.read(ctx, session) if pci else None
    except QmpError as err:
        raise ActionFailed(f"QMP: {err}") from None
    finally:
        await close_quietly(session)
    disks, nics, devices_problem = liveplug.plugged_now(rec, spec, devices) if devices else ((), (), "")
    problem = "; ".join(p for p in (devices_problem, _mismatch(seen, spec, moving) if seen else "") if p)
    if problem:
        raise ActionFailed(f"QEMU does not show the change: {problem}")
    return steps, replace(seen.plugged if seen else rec.plugged, disks=disks, nics=nics)


async def _grow(ctx: Context, s: QmpSession, rec: AppliedRecord, spec: InstanceSpec) -> list[str]:
    """block_resize of the provisioned disks whose size grew (alongside other live disk changes)."""
    was = {d.path: d for d in rec.spec.disks}
    steps = []
    for disk in spec.disks:
        old = was.get(disk.path)
        if old is None or disk.size is None or old.size is None or disk.size <= old.size:
            continue
        node = liveplug.node_names(rec.launched_spec, disk)[1]
        await s.execute("block_resize", {"node-name": node, "size": disk.size}, timeout=ctx.deadlines.qmp)
        steps.append(f"{disk.path} grown")
    return steps


async def _vnc_password(ctx: Context, node: Node, s: QmpSession, old: InstanceSpec,
                        spec: InstanceSpec) -> list[str]:
    """A new VNC password file: read on the node, set with change-vnc-password (never in argv)."""
    if spec.vnc is None or spec.vnc.password_file is None or old.vnc == spec.vnc:
        return []
    try:
        password = await node.read_secret(spec.vnc.password_file, "vnc.passwordFile")
    except SecretFileError as err:
        raise ActionFailed(str(err)) from None
    await s.execute("change-vnc-password", {"password": password}, timeout=ctx.deadlines.qmp)
    return ["VNC password"]


async def _converge(ctx: Context, s: QmpSession, spec: InstanceSpec) -> tuple[list[str], _Moving | None]:
    """Steps 2-5; with where the balloon was when it was set, if the guest is still moving it."""
    steps: list[str] = []
    moving = None
    seen = await _read(ctx, s)
    q = ctx.deadlines.qmp
    for backend in seen.orphans:  # a killed run's half-plugged DIMM: its backend goes (memory, and the id)
        await s.execute("object-del", {"id": backend}, timeout=q)
        steps.append(f"unused {backend} removed")
    if spec.max_memory_mib is not None and spec.memory_mib != (seen.balloon_mib or seen.memory_mib):
        size = hotplug.dimm_to_add(seen.memory_mib, spec.memory_mib, spec.max_memory_mib)
        if size:
            if len(seen.plugged.dimms) >= hotplug.DIMM_SLOTS:
                raise ActionFailed(f"all {hotplug.DIMM_SLOTS} DIMM slots are in use: a restart is needed")
            dimm = hotplug.Dimm(seen.plugged.next_dimm_id(), size)
            await s.execute("object-add", {"qom-type": "memory-backend-ram", "id": dimm.backend,
                                           "size": size * hotplug.MIB}, timeout=q)
            await s.execute("device_add", {"driver": "pc-dimm", "id": dimm.id, "memdev": dimm.backend},
                            timeout=q)
            steps.append(f"DIMM {dimm.id} of {size} MiB")
        moving = await _balloon(ctx, s, spec.memory_mib)
        on_way = "" if moving is None else f" (at {moving.at_mib} MiB, the guest moving it)"
        steps.append(f"balloon {spec.memory_mib} MiB{on_way}")
    if spec.vcpus > seen.vcpus:
        free = hotplug.free_cpu_slots(seen.slots)
        missing = spec.vcpus - seen.vcpus
        if len(free) < missing:
            raise ActionFailed(f"QEMU has {len(free)} free CPU slots, {missing} needed")
        for cpu in free[:missing]:
            await s.execute("device_add", {"driver": cpu.driver, "id": cpu.id, **dict(cpu.props)}, timeout=q)
        steps.append(f"vCPUs {seen.vcpus} -> {spec.vcpus}")
    elif spec.vcpus < seen.vcpus:  # the hotplugged ones, highest first; the guest releases them
        extra = seen.vcpus - spec.vcpus
        plugged = sorted(seen.plugged.cpus, key=lambda c: c.props, reverse=True)
        if len(plugged) < extra:
            raise ActionFailed(f"only the {len(plugged)} hotplugged vCPUs can be unplugged, {extra} asked")
        await liveplug.unplug(ctx, s, [c.id for c in plugged[:extra]])
        steps.append(f"vCPUs {seen.vcpus} -> {spec.vcpus}")
    return steps, moving


async def _balloon(ctx: Context, s: QmpSession, target_mib: int) -> _Moving | None:
    """Set the balloon; confirmed by a BALLOON_CHANGE event at the target or on the way to it. Returns
    None when QEMU's `actual` is the target, else where it was and is (the guest moves the rest).

    Why not wait for `actual` to be the target: QEMU sends BALLOON_CHANGE at most once a second, so the
    event at the target comes a second after the first although the guest gets there in tens of ms.
    The first event that shows the balloon moving towards the target proves the guest's driver took
    the request; then only a guest that cannot free its memory keeps it short (virsh setmem does not
    wait at all). No movement within Deadlines.balloon fails the action."""
    target = target_mib * hotplug.MIB
    await s.execute("balloon", {"value": target}, timeout=ctx.deadlines.qmp)
    deadline = time.monotonic() + ctx.deadlines.balloon
    start = qemuview.balloon_actual(await s.execute("query-balloon", timeout=ctx.deadlines.qmp))
    actual = start
    while actual != target:
        if actual is not None and start is not None and abs(target - actual) < abs(target - start):
            return _Moving(start // hotplug.MIB, actual // hotplug.MIB)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            got = "?" if actual is None else f"{actual // hotplug.MIB} MiB"
            raise ActionFailed(f"the guest did not move its balloon to {target_mib} MiB within "
                               f"{ctx.deadlines.balloon:g}s (at {got})")
        try:
            event = await s.wait_event(["BALLOON_CHANGE"], remaining)
        except QmpError:
            continue  # the deadline: reported above
        actual = qemuview.balloon_actual(event.data)
    return None


async def _read(ctx: Context, s: QmpSession) -> hotplug.SizeView:
    return await qemuview.read_sizes(s, ctx.deadlines.qmp)


def _mismatch(seen: hotplug.SizeView, spec: InstanceSpec, moving: _Moving | None = None) -> str:
    problems = []
    if spec.max_memory_mib is not None:
        if seen.memory_mib < spec.memory_mib:
            problems.append(f"{seen.memory_mib} MiB plugged, {spec.memory_mib} MiB wanted")
        if seen.balloon_mib != spec.memory_mib and not (moving and moving.passes(seen.balloon_mib, spec)):
            problems.append(f"balloon at {seen.balloon_mib} MiB, {spec.memory_mib} MiB wanted")
    if seen.vcpus != spec.vcpus:
        problems.append(f"{seen.vcpus} vCPUs, {spec.vcpus} wanted")
    return "; ".join(problems)
