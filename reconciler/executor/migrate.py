"""Migrate an instance from node A to node B, so that at every moment it runs on exactly one of them.

1. Launch the target on B with `-incoming tcp:<B.address>:<port>` (a port from B's range that binds
   now; the next one if QEMU still finds it taken), under a MIGRATE_TARGET intent with its argv.
2. On the source: capabilities (`events`; `auto-converge`, `postcopy-ram` per spec; postcopy also on the
   target), parameters (`max-bandwidth`: the spec's cap, else no cap; `downtime-limit`), `stop` first for
   an offline migration, then `migrate`.
3. Follow MIGRATION / MIGRATION_PASS events. At each progress deadline (or pass), `query-migrate` gives
   the percentage and the remaining RAM. When the completion timeout or the no-progress timeout runs out:
   `migrate-start-postcopy` if the spec allows it, else `migrate_cancel`.
4. Failure or cancel: kill the target (verified pidfd) and remove its files, `cont` the source if we
   paused it. The same when the action itself is cancelled mid-migration (Ctrl-C, daemon shutdown),
   unless QEMU completed the migration first: then the move is completed as in a success. Once QEMU
   says how the migration ended, a cancellation waits until that is done (executor.finish): cut short,
   both QEMUs would be left.
   Success: `cont` the target if paused (or once loaded, if still `inmigrate`), write B's record, `quit`
   the source, remove A's files.

At most `Context.outgoing_limit` (2) migrations leave one node at once. Between two machines, the
target's address must be one the source's host can reach: a loopback or unspecified address would send
the guest's memory to whatever listens on that port of the source's own host, so it is refused first.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import time
from dataclasses import dataclass, replace
from typing import Any

from reconciler import devplug, hotplug
from reconciler.argv import IncomingSpec
from reconciler.errors import QmpError, QmpTimeout, ReconcilerError, RecordError
from reconciler.executor.context import Context
from reconciler.executor.finish import finish
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly, query_status
from reconciler.executor.start import (
    LaunchCancelled,
    PortInUse,
    Started,
    kill_started,
    launch_instance,
)
from reconciler.executor.stop import escalate
from reconciler.intent import IntentKind
from reconciler.model import Firmware, InstanceSpec, Migration, MigrationMode, NodeSpec
from reconciler.node import Node, Process, live_copies
from reconciler.planner.actions import Action
from reconciler.planner.policy import record_spec
from reconciler.qmp import QmpSession
from reconciler.records import AppliedRecord
from reconciler.units import format_rate
from reconciler.values import Value

MIB = 1024 * 1024
# `max-bandwidth` when the spec sets no cap. QEMU's default is a 128 MiB/s cap and its 7.2 reference names
# no "unlimited" value (0 happens not to throttle there, undocumented), so: the largest value it takes, as
# libvirt does.
UNCAPPED = (1 << 63) - 1


class End(enum.StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Watched(Value):
    """How a migration that was being watched ended."""

    end: End
    detail: str = ""
    info: dict[str, Any] | None = None  # the last query-migrate answer


def migrate_uri(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"tcp:{host}:{port}"


def percent(info: dict[str, Any]) -> float | None:
    """Share of RAM sent, from query-migrate's `ram` (total vs remaining)."""
    ram = info.get("ram")
    if not isinstance(ram, dict):
        return None
    total, remaining = ram.get("total"), ram.get("remaining")
    if not isinstance(total, int) or not isinstance(remaining, int) or total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * (total - remaining) / total))


def _host_local(address: str) -> str | None:
    """"loopback" or "unspecified" when `address` means the host it is used on, else None."""
    if address == "localhost":
        return "loopback"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None  # a host name: the source's host resolves it
    return "loopback" if ip.is_loopback else "unspecified" if ip.is_unspecified else None


def _machine(node: NodeSpec) -> str:
    """The machine a node is on; an SSH host that is this machine's loopback counts as this machine."""
    return "local" if node.ssh is None or _host_local(node.ssh.host) == "loopback" else node.machine


def unreachable_target(source: NodeSpec, target: NodeSpec) -> str | None:
    """Why `source`'s host cannot stream a migration to `target`'s address, or None when it can. On
    another machine, a loopback or unspecified address names the source's own host, not the target's."""
    kind = _host_local(target.address)
    if kind is None or _machine(source) == _machine(target):
        return None
    article = "an" if kind == "unspecified" else "a"
    return (f"node {target.name}'s address {target.address} is {article} {kind} "
            f"address, which node {source.name} (on another machine) cannot migrate to; set node "
            f"{target.name}'s address to one that {source.name}'s host reaches")


async def migrate(ctx: Context, action: Action) -> str:
    if action.source_node is None:
        raise ActionFailed("migration without a source node")
    source, target = ctx.node(action.source_node), ctx.node(action.node)
    why = unreachable_target(source.spec, target.spec)
    if why is not None:
        raise ActionFailed(why)
    async with ctx.outgoing(source.name):
        return await _migrate(ctx, action, source, target)


async def already_there(source: Node, target: Node, name: str) -> bool:
    """The instance runs on the target and not on the source: an interrupted migration that completed
    (see executor.duplicate) already did this action's work."""
    copies = {node for node, _ in await live_copies([source, target], name)}
    return copies == {target.name}


async def _migrate(ctx: Context, action: Action, source: Node, target: Node) -> str:
    t0 = time.monotonic()
    name = action.name
    if await already_there(source, target, name):
        return f"already on {target.name} (an interrupted migration completed)"
    try:
        rec = await source.read_record(name)
    except RecordError as err:
        raise ActionFailed(str(err)) from None
    if rec is None:
        raise ActionFailed(f"no applied record on {source.name}")
    handle = await source.process(rec.pid, rec.create_time, rec.argv)
    if handle is None:
        raise ActionFailed(f"the source QEMU (pid {rec.pid}) on {source.name} is not running")
    desired = ctx.specs.get(name, rec.spec)
    settings = desired.migration  # migration settings take effect without a restart
    mode = action.migration_mode or settings.mode
    # The target runs the recorded configuration (the device set must match the source's); its record
    # takes the fields that need no restart from the manifests, as an in-place record update would.
    spec = record_spec(rec.spec, desired, target.name)
    if spec.node is not None:
        spec = replace(spec, node=target.name)
    # After live changes the target boots as the source did (its launched spec), plus the devices
    # hotplugged since (read back from the source below): the same DIMMs and CPUs at the same ids.
    boot = spec if rec.boot_spec is None else replace(record_spec(rec.boot_spec, desired, target.name),
                                                       node=spec.node)
    live = _Live(boot, hotplug.Plugged())
    cap = f", capped at {format_rate(settings.max_bandwidth)}" if settings.max_bandwidth else ""
    ctx.progress.event(name, f"migrating {source.name} -> {target.name} ({mode.value}{cap})")
    async with handle:
        try:
            src = await source.qmp(name, ctx.deadlines.qmp)
        except QmpError as err:
            raise ActionFailed(f"source: {err}") from None
        try:
            offline = mode is MigrationMode.OFFLINE
            live = await _read_plugged(ctx, src, live, rec)
            await ctx.intent(IntentKind.MIGRATE_SOURCE, name, source, peer_node=target.name,
                             paused_source=offline)
            try:
                await _carry_nvram(source, target, name, spec)
                started, port = await _launch_target(ctx, target, live, source.name)
            except ActionFailed:
                await source.remove_intent(name)
                raise
            except LaunchCancelled as cancelled:  # no migration began: the target goes, the source stays
                ctx.progress.event(name, "interrupted: the migration target is stopped")
                if cancelled.started is not None:
                    await kill_started(ctx, target, name, cancelled.started)
                await source.remove_intent(name)
                raise
            try:
                watched, paused = await _run(ctx, src, target, name, started, port, settings, spec, offline)
            except asyncio.CancelledError:
                if await _unwind(ctx, src, source, target, name, started, offline) is End.COMPLETED:
                    with contextlib.suppress(ActionFailed, ReconcilerError):  # else the intents recover it
                        await _complete(ctx, handle, src, source, target, name, started, spec, live)
                raise
            # From here on, a cancellation waits until one copy is left (module doc, 4).
            if watched.end is not End.COMPLETED:
                resumed = await finish(_abandon(ctx, src, source, target, name, started, paused))
                raise ActionFailed(f"migration {watched.end.value}: {watched.detail}; the instance stays on "
                                   f"{source.name}{resumed}")
            await finish(_complete(ctx, handle, src, source, target, name, started, spec, live))
        finally:
            await close_quietly(src)
    return f"migrated {source.name} -> {target.name} in {time.monotonic() - t0:.2f}s{_facts(watched.info)}"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class _Live(Value):
    """What the target is started as: the source's launched spec and the devices hotplugged since."""

    boot: InstanceSpec
    plugged: hotplug.Plugged


async def _read_plugged(ctx: Context, src: QmpSession, live: _Live, rec: AppliedRecord) -> _Live:
    """The DIMMs and CPUs the source QEMU has hotplugged, as it reports them (not as a record says: a
    live update killed halfway may have plugged one it never recorded), and the disks and NICs added
    live at the slots QEMU shows them (their specs are the record's: QEMU's must be the same set)."""
    plugged = live.plugged
    try:
        if live.boot.max_memory_mib is not None or live.boot.max_vcpus is not None:
            devices = await src.execute("query-memory-devices", timeout=ctx.deadlines.qmp)
            slots = await src.execute("query-hotpluggable-cpus", timeout=ctx.deadlines.qmp)
            plugged = hotplug.plugged_from_qmp(devices, slots)
        if devplug.hotplug_machine(live.boot.machine):
            pci = devplug.pci_slots(await src.execute("query-pci", timeout=ctx.deadlines.qmp))
            ours = {d for d in pci if d.startswith(("hd", "nh"))}
            recorded = {p.id for p in rec.plugged.disks} | {p.id for p in rec.plugged.nics}
            if ours != recorded:
                raise ActionFailed(f"the source has devices added live that its record does not say "
                                   f"({', '.join(sorted(ours ^ recorded))}): an interrupted apply; apply "
                                   "again before migrating")
            plugged = replace(plugged, disks=tuple(replace(p, slot=pci[p.id]) for p in rec.plugged.disks),
                              nics=tuple(replace(p, slot=pci[p.id]) for p in rec.plugged.nics))
    except QmpError as err:
        raise ActionFailed(f"source: {err}") from None
    return replace(live, plugged=plugged)


async def _complete(ctx: Context, handle: Process, src: QmpSession, source: Node, target: Node,
                    name: str, started: Started, spec: InstanceSpec, live: _Live) -> None:
    """QEMU completed the migration: the target runs and is recorded, the source's shell goes."""
    await _finish_target(ctx, target, name, started)
    record = started.record(spec, target.name, ctx.revision)
    if live.boot != spec or live.plugged != hotplug.Plugged():
        record = replace(record, boot_spec=live.boot, plugged=live.plugged)
    await target.write_record(record)
    await target.remove_intent(name)
    await escalate(handle, src, graceful=None, d=ctx.deadlines)
    await source.remove_instance(name)


async def _abandon(ctx: Context, src: QmpSession, source: Node, target: Node, name: str, started: Started,
                   paused: bool) -> str:
    """The migration failed or was cancelled: the target goes, the source runs on (resumed if we paused
    it). Returns what the user is told about the source."""
    await kill_started(ctx, target, name, started)
    resumed = await _resume(ctx, src) if paused else ""
    await source.remove_intent(name)
    return resumed


async def _carry_nvram(source: Node, target: Node, name: str, spec: InstanceSpec) -> None:
    """A UEFI instance's variable store goes with it: the target's pflash file starts as the source's
    (QEMU moves the flash's memory, but writes only the sectors the guest writes later to the file)."""
    if spec.firmware is not Firmware.UEFI:
        return
    data = await source.read_nvram(name)
    if data is not None:
        await target.write_nvram(name, data)


async def _launch_target(ctx: Context, target: Node, live: _Live, source: str) -> tuple[Started, int]:
    ports = target.spec.migration_ports
    reserved = ctx.reserved_ports.setdefault(target.name, set())
    last = ""
    for port in range(ports.first, ports.last + 1):
        if port in reserved or not await target.port_free(port):
            continue
        reserved.add(port)
        try:
            incoming = IncomingSpec(target.spec.address, port)
            started = await launch_instance(ctx, target, live.boot, incoming=incoming, peer=source,
                                            plugged=live.plugged)
            return started, port
        except PortInUse as err:
            last = f" (last: {err.detail})"
        finally:
            reserved.discard(port)
    raise ActionFailed(f"no free migration port on {target.name} in {ports.first}-{ports.last}{last}")


def parameters(settings: Migration) -> dict[str, object]:
    """`migrate-set-parameters` for a migration. Both are always set: a QEMU keeps the values of an
    earlier (interrupted) migration otherwise."""
    bandwidth = settings.max_bandwidth if settings.max_bandwidth > 0 else UNCAPPED
    return {"downtime-limit": settings.max_downtime_ms, "max-bandwidth": bandwidth}


async def _run(ctx: Context, src: QmpSession, target: Node, name: str, started: Started, port: int,
               settings: Migration, spec: InstanceSpec, offline: bool) -> tuple[Watched, bool]:
    """Configure, start and follow the migration; (how it ended, whether we paused the source)."""
    q = ctx.deadlines.qmp
    paused = False
    try:
        caps = [{"capability": "events", "state": True},
                {"capability": "auto-converge", "state": settings.auto_converge},
                {"capability": "postcopy-ram", "state": settings.post_copy}]
        await src.execute("migrate-set-capabilities", {"capabilities": caps}, timeout=q)
        if settings.post_copy:
            tgt = await target.qmp(name, q)
            try:
                postcopy = [{"capability": "postcopy-ram", "state": True}]
                await tgt.execute("migrate-set-capabilities", {"capabilities": postcopy}, timeout=q)
            finally:
                await close_quietly(tgt)
        await src.execute("migrate-set-parameters", parameters(settings), timeout=q)
        if offline:
            await src.execute("stop", timeout=q)
            paused = True
        await src.execute("migrate", {"uri": migrate_uri(target.spec.address, port)}, timeout=q)
        return await watch(ctx, src, name, settings, spec.memory_mib), paused
    except QmpError as err:
        return Watched(End.FAILED, str(err)), paused


async def watch(ctx: Context, src: QmpSession, name: str, settings: Migration, memory_mib: int) -> Watched:
    """Follow a started migration until it completes, fails, or we cancel it (deadlines in the module doc)."""
    q = ctx.deadlines.qmp
    t0 = time.monotonic()
    deadline = t0 + settings.completion_timeout(memory_mib)
    best: int | None = None
    progressed = t0
    postcopy = False
    while True:
        now = time.monotonic()
        stall_at = progressed + settings.progress_timeout
        wait = min(ctx.deadlines.progress_report, deadline - now, stall_at - now)
        if postcopy:
            wait = min(ctx.deadlines.progress_report, deadline - now)
        if wait > 0:
            with contextlib.suppress(QmpTimeout):
                await src.wait_event(["MIGRATION", "MIGRATION_PASS"], wait)
        # Whatever woke us (an event or the report deadline), query-migrate has the status, the figures
        # and the error text.
        info = await src.execute("query-migrate", timeout=q)
        info = info if isinstance(info, dict) else {}
        status = str(info.get("status", ""))
        if status == "completed":
            return Watched(End.COMPLETED, "", info)
        if status in ("failed", "cancelled"):
            return Watched(End(status), str(info.get("error-desc", status)), info)
        pct = percent(info)
        if pct is not None:
            ctx.progress.percent(name, "migrating" + (" (post-copy)" if postcopy else ""), pct)
        remaining = (info.get("ram") or {}).get("remaining")
        now = time.monotonic()
        if isinstance(remaining, int) and (best is None or remaining < best):
            best, progressed = remaining, now
        if postcopy:
            if now >= deadline:
                return Watched(End.FAILED, "post-copy did not complete in time; QEMU keeps both halves "
                               "(not cancelled: the guest's memory is split between the nodes)", info)
            continue
        why = ""
        if now >= deadline:
            why = f"not completed within {settings.completion_timeout(memory_mib):g}s"
        elif now - progressed >= settings.progress_timeout:
            why = f"no progress for {settings.progress_timeout:g}s"
        if not why:
            continue
        if settings.post_copy and status == "active":
            ctx.progress.event(name, f"{why}: switching to post-copy")
            await src.execute("migrate-start-postcopy", timeout=q)
            postcopy = True
            deadline = now + settings.completion_timeout(memory_mib)
            continue
        ctx.progress.event(name, f"{why}: cancelling the migration")
        return await _cancel(ctx, src, why)


async def _cancel(ctx: Context, src: QmpSession, why: str) -> Watched:
    await src.execute("migrate_cancel", timeout=ctx.deadlines.qmp)
    end = time.monotonic() + ctx.deadlines.cancel
    while (left := end - time.monotonic()) > 0:
        try:
            event = await src.wait_event(["MIGRATION"], left)
        except QmpTimeout:
            break
        status = event.data.get("status")
        if status == "completed":  # it finished before the cancel landed
            info = await src.execute("query-migrate", timeout=ctx.deadlines.qmp)
            return Watched(End.COMPLETED, "", info if isinstance(info, dict) else None)
        if status in ("cancelled", "failed"):
            return Watched(End.CANCELLED, why)
    raise ActionFailed(f"migrate_cancel: no cancelled event within {ctx.deadlines.cancel:g}s")


async def _unwind(ctx: Context, src: QmpSession, source: Node, target: Node, name: str, started: Started,
                  offline: bool) -> End | None:
    """Interrupted mid-migration (Ctrl-C in `apply`, or the daemon's shutdown grace ran out): abort it as
    `virsh migrate` does, leaving the instance on the source alone, as after a failed migration. Returns
    how the migration ended: COMPLETED if QEMU finished it first (the caller completes the move). When
    QEMU cannot say, or a second cancellation cuts this short, the intents on both nodes stay and the
    next run settles it (executor.duplicate)."""
    ctx.progress.event(name, "interrupted: cancelling the migration")
    try:
        status = await cancel_migration(src, ctx, keep_postcopy=True)
    except QmpError:
        return None
    end = End.COMPLETED if status == "completed" else End.CANCELLED if status in _CANCELLED else None
    if end is End.CANCELLED:
        await kill_started(ctx, target, name, started)
        if offline:
            await _resume(ctx, src)
        await source.remove_intent(name)
    return end


IN_FLIGHT = frozenset({"setup", "active", "pre-switchover", "device", "wait-unplug", "cancelling",
                       "postcopy-active", "postcopy-paused", "postcopy-recover"})
_CANCELLED = frozenset({"none", "cancelled", "failed"})  # nothing runs or ran: the source keeps the guest


async def migration_status(session: QmpSession, timeout: float) -> str:
    """The status `query-migrate` reports for the session's outgoing migration ("none" when none ran)."""
    info: Any = await session.execute("query-migrate", timeout=timeout)
    return str(info.get("status", "none")) if isinstance(info, dict) else "none"


async def cancel_migration(session: QmpSession, ctx: Context, *, keep_postcopy: bool = False) -> str | None:
    """`migrate_cancel` the session's outgoing migration if one is in flight, and wait for its end.

    Returns the final status: "cancelled" or "failed", "completed" when it finished before the cancel
    landed, "none" when none ran; None when it is still in flight `ctx.deadlines.cancel` seconds after
    the cancel, or (with `keep_postcopy`) is in post-copy, where cancelling would split the guest's memory
    between the nodes. QmpError propagates."""
    status = await migration_status(session, ctx.deadlines.qmp)
    if status not in IN_FLIGHT:
        return status
    if keep_postcopy and status.startswith("postcopy"):
        return None
    with contextlib.suppress(QmpError):
        await session.execute("migrate_cancel", timeout=ctx.deadlines.qmp)
    end = time.monotonic() + ctx.deadlines.cancel
    while status in IN_FLIGHT:
        left = end - time.monotonic()
        if left <= 0:
            return None
        with contextlib.suppress(QmpTimeout):
            await session.wait_event(["MIGRATION"], left)
        status = await migration_status(session, ctx.deadlines.qmp)
    return status


async def _resume(ctx: Context, src: QmpSession) -> str:
    try:
        await src.execute("cont", timeout=ctx.deadlines.qmp)
    except QmpError as err:
        return f" (paused: cont failed: {err})"
    return " (resumed)"


async def _finish_target(ctx: Context, target: Node, name: str, started: Started) -> None:
    """Make sure the target runs (an offline migration leaves it paused).

    The source reports `completed` once it has sent everything; in pre-copy (no return path) it does not
    wait for the target, which may still be loading what was in flight (socket buffers of a network
    between hosts hold megabytes). A target still `inmigrate` is told to run once loaded (`cont` there
    only sets autostart), and its RESUME awaited (events are buffered from the session's start)."""
    session = await target.qmp(name, ctx.deadlines.qmp)
    try:
        status = await query_status(session, ctx.deadlines.qmp)
        if status == "inmigrate":  # the source has sent it all; the target may still be loading it
            await session.execute("cont", timeout=ctx.deadlines.qmp)
            with contextlib.suppress(QmpTimeout):
                await session.wait_event(["RESUME", "STOP"], ctx.deadlines.launch)
            status = await query_status(session, ctx.deadlines.qmp)
        if status in ("paused", "postmigrate", "prelaunch"):
            await session.execute("cont", timeout=ctx.deadlines.qmp)
            status = await query_status(session, ctx.deadlines.qmp)
        if status != "running":
            raise ActionFailed(f"migration completed but the target on {target.name} is {status}")
    finally:
        await close_quietly(session)


def _facts(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    parts = []
    if isinstance(info.get("downtime"), int):
        parts.append(f"downtime {info['downtime']} ms")
    ram = info.get("ram")
    if isinstance(ram, dict) and isinstance(ram.get("transferred"), int):
        parts.append(f"{ram['transferred'] / MIB:.1f} MiB sent")
    return f" ({', '.join(parts)})" if parts else ""
