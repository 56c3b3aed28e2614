"""Start: launch QEMU from the built argv, make sure it runs, write the applied record.

Order matters for crash safety: the refusal check (no QEMU of this instance alive on any node), then
the intent with the exact argv, then the launch, then the record, then the intent goes. A launch that
fails is undone here: what was started is killed (launch.launch already kills a process whose QMP never
answered), the instance's runtime files are removed, and QEMU's own error line is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from dataclasses import dataclass

from reconciler import hostports
from reconciler.argv import IncomingSpec, Launch, build_launch
from reconciler.errors import (
    ArgvError,
    LaunchError,
    QmpError,
    RemoteCallError,
    SecretFileError,
    StateDirError,
)
from reconciler.executor.context import Context
from reconciler.executor.finish import HeldCancel, finish
from reconciler.executor.outcome import ActionFailed
from reconciler.executor.qmpcalls import close_quietly, query_status
from reconciler.hotplug import Plugged
from reconciler.intent import IntentKind
from reconciler.launch import Launched
from reconciler.model import InstanceSpec
from reconciler.node import Node, live_copies
from reconciler.provision.imagecheck import request_of
from reconciler.provision.images import ImageError
from reconciler.records import AppliedRecord
from reconciler.values import Value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Started(Value):
    """A QEMU started and answering: what was launched, and its first run state."""

    launch: Launch
    launched: Launched
    qemu_version: str
    status: str  # QEMU's run state right after the start (running, or inmigrate for a target)

    def record(self, spec: InstanceSpec, node: str, revision: str | None) -> AppliedRecord:
        ld = self.launched
        return AppliedRecord.create(spec, node, ld.argv, self.qemu_version, ld.pid, ld.create_time,
                                    ld.started_at, revision)


class PortInUse(ActionFailed):
    """The migration listener's port was taken between our bind test and QEMU's listen."""


_FAILED_OPTION = re.compile(r"(?:^|/ )[^\s:]+: (-[a-z][a-z0-9-]*) ")  # "qemu-system-x86_64: -vnc ...: ..."


def failed_option(detail: str) -> str | None:
    """The command-line option QEMU's error names ("-incoming", "-vnc"), if it names one."""
    m = _FAILED_OPTION.search(detail)
    return m.group(1) if m else None


def bind_failure(spec: InstanceSpec, node: str, incoming: IncomingSpec | None,
                 detail: str) -> ActionFailed | None:
    """A launch that failed on "Address already in use", told apart by which listener QEMU could not bind:
    only the migration listener's port is worth another try (PortInUse); a fixed port (the VNC display)
    stays taken whatever the migration port, so that is one clear error."""
    if "Address already in use" not in detail:
        return None
    option = failed_option(detail)
    if option == "-incoming" and incoming is not None:
        return PortInUse(detail)
    if option == "-vnc" and spec.vnc is not None:
        port = hostports.vnc_port(spec.vnc.display)
        return ActionFailed(f"VNC display {spec.vnc.display} ({spec.vnc.bind} port {port}) is already in use "
                            f"on node {node}'s host: {detail}")
    return ActionFailed(f"a port QEMU listens on is already in use on node {node}'s host: {detail}")


async def refuse_if_running(ctx: Context, name: str, *, except_node: str | None = None) -> None:
    """Fail unless no QEMU of `name` is alive on any node (checked right before launching)."""
    others = [n for n in ctx.nodes.values() if n.name != except_node]
    for node, pid in (await live_copies(others, name))[:1]:
        raise ActionFailed(f"already running on node {node} (pid {pid}); refusing to start a second QEMU")


class LaunchCancelled(asyncio.CancelledError):
    """The action was cancelled (Ctrl-C, daemon shutdown) while QEMU was launching. The launch was let
    finish first, so nothing is left half-started: `started` is what now runs (None if the launch failed,
    in which case it was cleaned up as any failed launch). The caller keeps it or kills it, then lets
    the cancellation go on (this is a CancelledError)."""

    def __init__(self, started: Started | None) -> None:
        super().__init__()
        self.started = started


async def launch_instance(ctx: Context, node: Node, spec: InstanceSpec, *,
                          incoming: IncomingSpec | None = None, peer: str | None = None,
                          plugged: Plugged | None = None) -> Started:
    """Launch `spec` on `node` (as a migration target when `incoming` is set, with the devices `plugged`
    into its source); the caller writes the record. Raises ActionFailed (PortInUse for a taken migration
    port) with nothing left running, or LaunchCancelled."""
    try:
        built = build_launch(spec, node.spec, incoming=incoming, plugged=plugged or Plugged())
    except ArgvError as err:
        raise ActionFailed(str(err)) from None
    password = await _vnc_password(node, spec)
    kind = IntentKind.START if incoming is None else IntentKind.MIGRATE_TARGET
    await refuse_if_running(ctx, spec.name, except_node=peer)
    if incoming is None:  # a migration target uses the source's disks (shared storage); never new ones
        await create_disks(ctx, node, spec)
    await ctx.intent(kind, spec.name, node, argv=built.argv, spec=spec, peer_node=peer)
    # A QEMU killed mid-daemonize could leave its daemon behind, unrecorded: a cancellation waits for the
    # launch to end (it has its own deadlines), then hands over what runs.
    try:
        return await finish(_launch(ctx, node, spec, built, incoming, password))
    except HeldCancel as held:
        raise LaunchCancelled(held.result) from None


async def create_disks(ctx: Context, node: Node, spec: InstanceSpec) -> tuple[str, ...]:
    """Create the instance's missing provisioned disks (size, baseImage), recorded as owned on the node;
    a file already there is used as it is. Returns the paths created."""
    made = []
    for disk in spec.disks:
        if not disk.provisioned:
            continue
        try:
            created = await node.create_disk(spec.name, request_of(disk))
        except (ImageError, RemoteCallError) as err:
            raise ActionFailed(str(err)) from None
        if created:
            made.append(disk.path)
            ctx.progress.event(spec.name, f"created disk image {disk.path}")
    return tuple(made)


async def _vnc_password(node: Node, spec: InstanceSpec) -> str | None:
    """The VNC password, read on the node before anything is launched (a bad file starts nothing)."""
    if spec.vnc is None or spec.vnc.password_file is None:
        return None
    try:
        return await node.read_secret(spec.vnc.password_file, "vnc.passwordFile")
    except SecretFileError as err:
        raise ActionFailed(str(err)) from None


async def _launch(ctx: Context, node: Node, spec: InstanceSpec, built: Launch, incoming: IncomingSpec | None,
                  password: str | None) -> Started:
    had_record = await _has_record(node, spec.name)
    version = asyncio.ensure_future(node.qemu_version())
    launched: Launched | None = None
    try:
        launched = await node.launch(spec.name, built, ctx.deadlines.launch)
        status = await _settle(ctx, node, spec.name, launched, expect_incoming=incoming is not None,
                               vnc_password=password)
        qemu_version = await version
    except (LaunchError, QmpError, ActionFailed) as err:
        version.cancel()
        if launched is not None:  # it runs, unconfirmed and unrecorded: left so, it would block every start
            await _kill(ctx, node, launched)
        await _clean_failed(node, spec.name, had_record)
        detail = err.detail if isinstance(err, LaunchError | ActionFailed) else str(err)
        raise bind_failure(spec, node.name, incoming, detail) or ActionFailed(detail) from None
    return Started(built, launched, qemu_version, status)


async def start(ctx: Context, node: Node, spec: InstanceSpec) -> str:
    """The whole start action; returns the line the user sees."""
    t0 = time.monotonic()
    ctx.progress.event(spec.name, f"starting on {node.name}")
    had_record = await _has_record(node, spec.name)
    try:
        started = await launch_instance(ctx, node, spec)
    except LaunchCancelled as cancelled:
        if cancelled.started is not None:  # it runs: finish the start (record, no intent), then stop
            with contextlib.suppress(ActionFailed):
                await _commit(ctx, node, spec, cancelled.started, had_record)
        raise
    await _commit(ctx, node, spec, started, had_record)
    return f"started on {node.name} (pid {started.launched.pid}) in {time.monotonic() - t0:.2f}s"


async def _commit(ctx: Context, node: Node, spec: InstanceSpec, started: Started, had_record: bool) -> None:
    """Record what runs and drop the intent."""
    try:
        await node.write_record(started.record(spec, node.name, ctx.revision))
    except StateDirError as err:
        # A QEMU without a record would look unmanaged once the intent is gone: take it down again.
        await _kill(ctx, node, started.launched)
        await _clean_failed(node, spec.name, had_record)
        detail = f"QEMU started but its record could not be written, so it was stopped: {err}"
        raise ActionFailed(detail) from None
    await node.remove_intent(spec.name)
    await _forget_elsewhere(ctx, node, spec.name)


async def _settle(ctx: Context, node: Node, name: str, launched: Launched, *, expect_incoming: bool,
                  vnc_password: str | None = None) -> str:
    """QEMU's run state after launching: running (continued if it came up paused) or inmigrate. The VNC
    password is set first; until then a `password=on` display lets nobody in.

    A plain start whose first answer (during the launch) was `running` has nothing left to do here: no
    second session (for the CLI, no qemu.qmp import either)."""
    if launched.status == "running" and not expect_incoming and vnc_password is None:
        return launched.status
    session = await node.qmp(name, ctx.deadlines.qmp)
    try:
        if vnc_password is not None:
            try:
                await session.execute("change-vnc-password", {"password": vnc_password},
                                      timeout=ctx.deadlines.qmp)
            except QmpError as err:
                await _kill(ctx, node, launched)
                raise ActionFailed(f"the VNC password could not be set, so QEMU was stopped: {err}") from None
        status = await query_status(session, ctx.deadlines.qmp)
        if expect_incoming:
            if status != "inmigrate":
                await _kill(ctx, node, launched)
                raise ActionFailed(f"migration target came up {status}, not inmigrate")
            return status
        if status in ("paused", "prelaunch"):
            await session.execute("cont", timeout=ctx.deadlines.qmp)
            status = await query_status(session, ctx.deadlines.qmp)
        if status != "running":
            await _kill(ctx, node, launched)
            raise ActionFailed(f"QEMU came up {status}, not running")
        return status
    finally:
        await close_quietly(session)


async def _kill(ctx: Context, node: Node, launched: Launched) -> None:
    handle = await node.process(launched.pid, launched.create_time, launched.argv)
    if handle is None:
        return
    async with handle:
        await handle.send_signal(signal.SIGKILL)
        await handle.wait_exit(ctx.deadlines.kill)


async def kill_started(ctx: Context, node: Node, name: str, started: Started) -> None:
    """Kill a process this run launched (a failed migration target) and remove its files."""
    await _kill(ctx, node, started.launched)
    await node.remove_instance(name)


async def _forget_elsewhere(ctx: Context, node: Node, name: str) -> None:
    """The instance now runs on `node`: drop the files of a dead copy on another node (a crashed or stale
    record, its pidfile and sockets), which nothing else would ever clean. Never where a QEMU lives."""
    for other in ctx.nodes.values():
        if other.name == node.name or not other.reachable:
            continue  # housekeeping only: a node lost during the run is cleaned by a later one
        try:
            if await _has_record(other, name) and not await other.live_pids(name):
                await other.remove_instance(name)
        except RemoteCallError:
            if other.reachable:
                raise


async def _has_record(node: Node, name: str) -> bool:
    try:
        return await node.read_record(name) is not None
    except Exception:  # an unreadable record is still a record: keep it
        return True


async def _clean_failed(node: Node, name: str, had_record: bool) -> None:
    if had_record:
        await node.clean_runtime_files(name)  # the previous record (with its stop cause) stays
    else:
        await node.remove_instance(name)


