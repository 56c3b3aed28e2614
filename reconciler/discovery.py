"""Discovery: what is actually running on the nodes, as an `actual.ActualState`.

The applied records say what should exist; a pidfile alone proves nothing (QEMU deletes its own pidfile
on exit, so a guest that powered itself off leaves only its record, and a left-over pidfile may name a
PID that now belongs to someone else). An instance is live only when `procs.check` proves the process is
the one we recorded. Live instances are then asked `query-status` over their control QMP socket, all at
once, each under a short deadline: a hung monitor yields UNKNOWN instead of hanging discovery. QEMU
processes that are not ours are listed as unmanaged and never touched.

Discovery is on the path of every `status`, `plan` and `apply`, so it is kept cheap: one json.loads per
record, one /proc look at each recorded PID (reconciler.procs), and a single pass over the host's
processes (cmdline, and the name where argv[0] does not tell) to find unmanaged QEMUs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from reconciler import intent as intents
from reconciler import layout, procs, statedir
from reconciler.actual import (
    Activity,
    ActualInstance,
    ActualState,
    InFlight,
    RunState,
    StopCause,
    UnmanagedProcess,
)
from reconciler.errors import LaunchError, QmpError, QmpTimeout, RecordError, StateDirError
from reconciler.model import NodeSpec
from reconciler.records import AppliedRecord
from reconciler.values import Value

QMP_TIMEOUT = 0.5  # seconds per instance (the queries run concurrently)

# QEMU's RunState (qapi/run-state.json) -> ours; anything not listed is UNKNOWN.
QMP_STATES: dict[str, RunState] = {
    "running": RunState.RUNNING,
    "paused": RunState.PAUSED,
    "prelaunch": RunState.PAUSED,  # started with -S, never continued
    "suspended": RunState.PAUSED,
    "debug": RunState.PAUSED,
    "io-error": RunState.PAUSED,
    "watchdog": RunState.PAUSED,
    "save-vm": RunState.PAUSED,
    "restore-vm": RunState.PAUSED,
    "colo": RunState.PAUSED,
    "finish-migrate": RunState.PAUSED,  # a source in the last phase of a migration (may still fail)
    "shutdown": RunState.SHUTDOWN,
    "inmigrate": RunState.INMIGRATE,
    "postmigrate": RunState.POSTMIGRATE,
    "guest-panicked": RunState.CRASHED,
    "internal-error": RunState.CRASHED,
}


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class _Live(Value):
    """An instance whose process is proved ours; its state is still to be asked over QMP."""

    base: ActualInstance
    qmp_socket: str
    record: AppliedRecord | None = None


def discover(nodes: Iterable[NodeSpec], qmp_timeout: float = QMP_TIMEOUT) -> ActualState:
    """The actual state of `nodes`, without an event loop: the live instances' monitors are asked at once
    through one selector (reconciler.qmpstatus), so `plan` and `status` on local nodes never import
    asyncio. Only a live update killed halfway (its QEMU's devices to read over a full QMP session) runs
    one. Code that runs in an event loop (the daemon, apply) uses `discover_async`."""
    from reconciler import qmpstatus

    scan = _scan(nodes)
    statuses = qmpstatus.query_all([lv.qmp_socket for lv in scan.live], qmp_timeout)
    left: dict[int, tuple[str, ...]] = {}
    if scan.suspects:
        import asyncio

        left = asyncio.run(_leftovers_of(scan.suspects, qmp_timeout))
    return _finish(scan, statuses, left)


async def discover_async(nodes: Iterable[NodeSpec], qmp_timeout: float = QMP_TIMEOUT) -> ActualState:
    import asyncio

    scan = _scan(nodes)
    statuses = await asyncio.gather(*(_query(lv.qmp_socket, qmp_timeout) for lv in scan.live))
    left = await _leftovers_of(scan.suspects, qmp_timeout)
    return _finish(scan, statuses, left)


_Suspects = list[tuple[_Live, intents.Intent, layout.InstancePaths]]


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class _Scan(Value):
    """What the state directories and the process table say, before the live monitors are asked."""

    known: list[ActualInstance]  # the instances known without QMP
    live: list[_Live]
    flights: list[InFlight]  # the actions other runs are carrying out
    host: _HostProcesses  # this machine's QEMU processes
    suspects: _Suspects  # the live instances whose live update was killed halfway


def _scan(nodes: Iterable[NodeSpec]) -> _Scan:
    scan = _Scan([], [], [], _HostProcesses(), [])
    for node in nodes:
        for name in statedir.instance_names(node):
            _look(node, name, scan)
    return scan


def _look(node: NodeSpec, name: str, scan: _Scan) -> None:
    """Look at one instance directory: its intent (adopted or cleaned), its record, pidfile and process."""
    try:
        paths = layout.instance_paths(node, name)
    except layout.InvalidInstanceName:
        return  # not a directory we could have created
    statedir.remove_dead_temps(paths.dir)  # left by a writer killed mid-write
    it = read_intent(paths)
    flight = in_flight(node, name, it) if it is not None else None
    if flight is not None:
        scan.flights.append(flight)
    item = (_adopt(node, paths, scan.host, it) if it is not None else None) or _inspect(node, name, paths)
    if it is not None and _live_update(it) and not intents.owner_alive(it):  # killed halfway
        if isinstance(item, _Live) and item.record is not None:
            scan.suspects.append((item, it, paths))
        else:
            _clean_stale_intent(paths)
    if isinstance(item, _Live):
        scan.live.append(item)
    elif item is not None:
        scan.known.append(item)


def _finish(scan: _Scan, statuses: Sequence[str | QmpError], left: dict[int, tuple[str, ...]],
            *, unmanaged_too: bool = True) -> ActualState:
    live, flights, host = scan.live, scan.flights, scan.host
    found = scan.known + [replace(with_status(lv.base, st), leftovers=left.get(id(lv), ()))
                          for lv, st in zip(live, statuses, strict=True)]
    ours = {lv.base.pid for lv in live}
    unmanaged = [
        UnmanagedProcess(pid=p.pid, name=p.guest_name, cmdline=p.cmdline)
        for p in (host.get() if unmanaged_too else ()) if p.pid not in ours
    ]
    found.sort(key=lambda i: (i.name, i.node))
    unmanaged.sort(key=lambda u: u.pid)
    return ActualState(instances=tuple(found), unmanaged=tuple(unmanaged), in_flight=tuple(flights))


async def discover_instances_async(node: NodeSpec, names: Iterable[str],
                                   qmp_timeout: float = QMP_TIMEOUT) -> ActualState:
    """The named instances of `node` alone, each looked at exactly as `discover_async` does (a name with
    no directory on the node is simply absent). For the watch daemon's incremental passes: no walk of the
    state directory and no scan of the host's processes (unless an intent needs one), so the cost is that
    of the named instances, whatever else runs. `unmanaged` is empty: only a full discovery finds those."""
    import asyncio

    scan = _Scan([], [], [], _HostProcesses(), [])
    for name in sorted(set(names)):
        _look(node, name, scan)
    statuses = await asyncio.gather(*(_query(lv.qmp_socket, qmp_timeout) for lv in scan.live))
    left = await _leftovers_of(scan.suspects, qmp_timeout)
    return _finish(scan, statuses, left, unmanaged_too=False)


def _inspect(node: NodeSpec, name: str, paths: layout.InstancePaths) -> ActualInstance | _Live | None:
    pidfile_pid = statedir.read_pidfile(paths.pidfile)
    pidfile_exists = pidfile_pid is not None or os.path.lexists(paths.pidfile)
    try:
        record = statedir.read_record(paths)
    except RecordError as err:
        # Unknown, not stopped: a planner must not start a second QEMU on the same disks.
        return ActualInstance(name=name, node=node.name, state=RunState.UNKNOWN, spec=None, pid=pidfile_pid,
                              detail=str(err))
    if record is None:
        if not pidfile_exists:
            return None  # an empty or foreign directory
        alive = pidfile_pid is not None and procs.is_alive(pidfile_pid)
        detail = "pidfile without an applied record" + (f"; pid {pidfile_pid} is another process"
                                                        if alive else "")
        return ActualInstance(name=name, node=node.name, state=RunState.STALE, spec=None, pid=pidfile_pid,
                              detail=detail, pidfile_foreign=alive)
    return _classify(node, record, paths, pidfile_pid, pidfile_exists)


def _classify(node: NodeSpec, record: AppliedRecord, paths: layout.InstancePaths, pidfile_pid: int | None,
              pidfile_exists: bool) -> ActualInstance | _Live:
    base = ActualInstance(name=record.name, node=node.name, state=RunState.UNKNOWN, spec=record.spec,
                          spec_hash=record.spec_hash, revision=record.revision, stopped_at=record.stopped_at,
                          boot_spec=record.boot_spec)
    if record.stop_cause is not None and not pidfile_exists:
        return _stopped(base, record.stop_cause, "")
    # The pidfile names the process; without one, the record's PID may still be alive (pidfile removed
    # by hand): treating that as gone would let a planner start a second QEMU on the same disks.
    check = procs.check(pidfile_pid or record.pid, record.create_time, record.argv)
    if not check.ours and pidfile_pid is not None and pidfile_pid != record.pid:
        recorded = procs.check(record.pid, record.create_time, record.argv)  # a pidfile edited by hand
        check = recorded if recorded.ours else check
    if check.ours:
        detail = "" if pidfile_exists else "pidfile missing"
        return _Live(replace(base, pid=check.pid, started_at=record.create_time, detail=detail), paths.qmp,
                     record)
    ev = exit_evidence(check, record.pid, pidfile_pid, pidfile_exists)
    if ev.state is RunState.STALE:
        return replace(base, state=ev.state, pid=pidfile_pid, detail=ev.detail, pidfile_foreign=ev.foreign)
    if record.stop_cause is not None:  # what we recorded when it stopped beats what is left behind
        return _stopped(base, record.stop_cause, "")
    return _stopped(base, ev.cause or StopCause.UNKNOWN, ev.detail)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ExitEvidence(Value):
    """What the files a recorded QEMU left behind say about why it is not running."""

    state: RunState  # STOPPED, CRASHED or STALE
    cause: StopCause | None  # None: STALE, nothing known about how QEMU ended
    detail: str
    foreign: bool = False  # the pidfile names a live process that is not ours


def exit_evidence(check: procs.Check, recorded_pid: int, pidfile_pid: int | None,
                  pidfile_exists: bool) -> ExitEvidence:
    """Why a recorded QEMU is not running (pure; `check` is of the pidfile's PID, or of the record's PID
    when there is no pidfile).

    QEMU removes its pidfile when it exits cleanly: on a signal it handles (SIGTERM, SIGINT, SIGHUP) or a
    `quit`. So a pidfile left naming the recorded PID, now gone, means QEMU did not exit cleanly: SIGKILL
    or a crash. No pidfile and no cause recorded by us means someone else stopped it. A pidfile naming a
    live process that is not ours says only that the pidfile is stale: that process is never touched.
    """
    gone = check.identity in (procs.Identity.GONE, procs.Identity.ZOMBIE)
    if not pidfile_exists:
        return ExitEvidence(RunState.STOPPED, StopCause.KILLED,
                            "QEMU exited cleanly but not by the reconciler (a signal such as SIGTERM, or a "
                            "quit over QMP)")
    if pidfile_pid is None:
        return ExitEvidence(RunState.STALE, None, "pidfile unreadable; the recorded process is gone")
    if pidfile_pid == recorded_pid and gone:
        return ExitEvidence(RunState.CRASHED, StopCause.CRASH,
                            f"QEMU (pid {recorded_pid}) ended without removing its pidfile: killed by "
                            "SIGKILL, or crashed")
    if gone:
        return ExitEvidence(RunState.STALE, None, f"stale pidfile: {check.detail}")
    return ExitEvidence(RunState.STALE, None, f"pidfile names another process: {check.detail}", foreign=True)


def _stopped(base: ActualInstance, cause: StopCause, detail: str) -> ActualInstance:
    state = RunState.STOPPED if cause in (StopCause.RECONCILER, StopCause.GUEST, StopCause.KILLED) \
        else RunState.CRASHED
    return replace(base, state=state, stop_cause=cause, detail=detail)


async def _query(socket_path: str, timeout: float) -> str | QmpError:
    from reconciler import qmp

    try:
        return await qmp.query_status(socket_path, timeout)
    except QmpError as err:
        return err


def with_status(base: ActualInstance, status: str | QmpError) -> ActualInstance:
    """`base` (a process proved ours) with what its monitor said, or UNKNOWN and unresponsive."""
    if isinstance(status, QmpError):
        why = "QMP did not answer in time" if isinstance(status, QmpTimeout) else f"QMP: {status.detail}"
        detail = f"{base.detail}; {why}" if base.detail else why
        return replace(base, state=RunState.UNKNOWN, detail=detail, qmp_unresponsive=True)
    state = QMP_STATES.get(status, RunState.UNKNOWN)
    cause = StopCause.CRASH if state is RunState.CRASHED else None
    return replace(base, state=state, qmp_status=status, stop_cause=cause, qmp_unresponsive=False)


def asked_again(inst: ActualInstance, status: str | QmpError) -> ActualInstance:
    """An unresponsive `inst` (from `with_status`) after a second question: the first one's QMP words go."""
    before = "" if inst.detail.startswith("QMP") else inst.detail.split("; QMP", 1)[0]
    return with_status(replace(inst, detail=before), status)


# --- nodes without manifests ---------------------------------------------------------------------------


def nodes_of_processes(known: Iterable[NodeSpec] = ()) -> list[NodeSpec]:
    """Nodes found from running QEMU processes, for when the manifests (or their Node documents) are
    missing: a QEMU we started has `-pidfile <stateDir>/instances/<name>/qemu.pid`, and its applied record
    next to the pidfile names the node. Only the state directories not in `known` are returned, each
    once, named after the first record found in it. Discovery still proves each process ours as usual.
    """
    seen = {os.path.realpath(n.state_dir) for n in known}
    found: list[NodeSpec] = []
    for proc in sorted(procs.qemu_processes(), key=lambda p: p.pid):
        located = _state_dir_of(proc.cmdline)
        if located is None or os.path.realpath(located[0]) in seen:
            continue
        state_dir, name = located
        probe = NodeSpec(name="-", state_dir=state_dir)
        try:
            record = statedir.read_record(layout.instance_paths(probe, name))
        except (RecordError, layout.InvalidInstanceName):
            continue
        if record is None:
            continue
        seen.add(os.path.realpath(state_dir))
        found.append(NodeSpec(name=record.node, state_dir=state_dir))
    return sorted(found, key=lambda n: (n.name, n.state_dir))


def _state_dir_of(cmdline: Iterable[str]) -> tuple[str, str] | None:
    """(state dir, instance name) from `-pidfile <stateDir>/instances/<name>/qemu.pid` (pure)."""
    args = list(cmdline)
    for flag, value in itertools.pairwise(args):
        if flag in ("-pidfile", "--pidfile") and os.path.isabs(value):
            pidfile = os.path.normpath(value)
            inst_dir = os.path.dirname(pidfile)
            name = os.path.basename(inst_dir)
            state_dir = os.path.dirname(os.path.dirname(inst_dir))
            try:
                expected = layout.instance_paths(NodeSpec(name="-", state_dir=state_dir), name).pidfile
            except layout.InvalidInstanceName:
                return None
            return (state_dir, name) if expected == pidfile else None
    return None


# --- intents: closing the gap between launching QEMU and writing its record -----------------------------


class _HostProcesses:
    """The host's QEMU processes, listed once per discovery and only when needed."""

    def __init__(self) -> None:
        self._list: list[procs.QemuProcess] | None = None

    def get(self) -> list[procs.QemuProcess]:
        if self._list is None:
            self._list = procs.qemu_processes()
        return self._list


def adopt_intent(node: NodeSpec, name: str, paths: layout.InstancePaths,
                 host: _HostProcesses) -> _Live | ActualInstance | None:
    """Resolve an instance's intent.json (see reconciler.intent), or None to inspect it as usual.

    A live process whose command line is exactly the intent's argv, started after the intent was written,
    is the instance (an apply was killed between launching it and writing the record): it is reported
    live, and once the intent's writer is gone its record is written and the intent removed. An intent
    whose process is not alive and whose writer is gone is stale: it is removed, with the runtime files
    of an instance that never got a record.
    """
    it = read_intent(paths)
    return _adopt(node, paths, host, it) if it is not None else None


def read_intent(paths: layout.InstancePaths) -> intents.Intent | None:
    """The instance's intent, or None when there is none or it does not decode (then it is not ours to
    interpret: it is left for a person)."""
    try:
        raw = statedir.read_json(paths.intent)
        return intents.from_jsonable(raw) if raw is not None else None
    except (StateDirError, intents.IntentError):
        return None


def _adopt(node: NodeSpec, paths: layout.InstancePaths, host: _HostProcesses,
           it: intents.Intent) -> _Live | ActualInstance | None:
    writer_alive = intents.owner_alive(it)
    match = _intent_process(it, host, paths.pidfile) if it.argv and it.spec is not None else None
    if match is _DAEMONIZING:
        # QEMU's foreground process still runs next to the daemon it forked (or before the fork): which
        # one is the instance is known once the foreground one exits. Not adopted, nothing cleaned.
        assert it.spec is not None
        return ActualInstance(name=it.instance, node=node.name, state=RunState.UNKNOWN, spec=it.spec,
                              detail="QEMU is still starting (its pidfile does not name it yet)")
    if not isinstance(match, tuple):
        if not writer_alive and not _live_update(it):  # that one is _scan's to resolve
            _clean_stale_intent(paths)
        return None
    pid, create_time = match
    assert it.spec is not None
    try:
        record = statedir.read_record(paths)
    except RecordError:
        record = None
    same = record is not None and record.pid == pid and record.argv == it.argv
    if record is None or not same:
        from reconciler.launch import qemu_version

        try:
            version = qemu_version(it.argv[0], node.state_dir)
        except LaunchError:
            version = "unknown"
        record = AppliedRecord.create(it.spec, node.name, it.argv, version, pid, create_time, it.time,
                                      it.revision)
        if not writer_alive:
            statedir.write_record(paths, record)
    if not writer_alive:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.intent)
    detail = "" if not writer_alive else "being started by another run"
    base = ActualInstance(name=record.name, node=node.name, state=RunState.UNKNOWN, spec=record.spec,
                          spec_hash=record.spec_hash, revision=record.revision, pid=pid,
                          started_at=create_time, detail=detail)
    return _Live(base, paths.qmp)


_ACTIVITIES = {
    intents.IntentKind.START: Activity.STARTING,
    intents.IntentKind.STOP: Activity.STOPPING,
    intents.IntentKind.RESET: Activity.RESETTING,
    intents.IntentKind.UPDATE: Activity.UPDATING,
    intents.IntentKind.MIGRATE_SOURCE: Activity.MIGRATING_OUT,
    intents.IntentKind.MIGRATE_TARGET: Activity.MIGRATING_IN,
}


def in_flight(node: NodeSpec, name: str, it: intents.Intent) -> InFlight | None:
    """The action another live run is carrying out on the instance, from its intent (None if none)."""
    if it.owner_pid == os.getpid() or not intents.owner_alive(it):
        return None
    return InFlight(name=name, node=node.name, activity=_ACTIVITIES[it.kind],
                    command=_command_of(it.owner_pid), pid=it.owner_pid, peer_node=it.peer_node)


def _command_of(pid: int) -> str:
    """The reconciler subcommand a process runs ("apply", "watch", ...), from its command line."""
    try:
        cmdline = procs.cmdline(pid)
    except (procs.NoSuchProcess, procs.AccessDenied):
        return "reconciler"
    return command_in(cmdline)


def command_in(cmdline: list[str]) -> str:
    """The word after `reconciler` (a script, or `-m reconciler`) that is not an option (pure)."""
    words = iter(cmdline)
    for word in words:
        if os.path.basename(word) == "reconciler" or word.endswith("/reconciler/__main__.py"):
            return next((w for w in words if not w.startswith("-")), "reconciler")
    return "reconciler"


_DAEMONIZING = object()  # _intent_process: processes match, but the pidfile names none of them yet


def _intent_process(it: intents.Intent, host: _HostProcesses,
                    pidfile: str) -> tuple[int, float] | object | None:
    """The live process the intent launched: the one its pidfile names. With -daemonize, QEMU's
    foreground process has the same command line as the daemon and lives on for a moment after writing
    the pidfile; adopting it instead would record a PID about to exit."""
    found: dict[int, float] = {}
    for p in host.get():
        if p.cmdline != it.argv:
            continue
        try:
            create_time = procs.create_time(p.pid)
        except (procs.NoSuchProcess, procs.AccessDenied):
            continue
        if it.matches(p.cmdline, create_time):
            found[p.pid] = create_time
    if not found:
        return None
    named = statedir.read_pidfile(pidfile)
    if named is not None and named in found:
        return named, found[named]
    return _DAEMONIZING


def _live_update(it: intents.Intent) -> bool:
    """A live update's intent: it carries the spec being applied (a record-only update's does not)."""
    return it.kind is intents.IntentKind.UPDATE and it.spec is not None


async def _leftovers_of(suspects: _Suspects, timeout: float) -> dict[int, tuple[str, ...]]:
    """For each live instance whose live update was killed halfway: what QEMU has unlike its record
    (keyed by id() of its _Live). An intent with nothing left to tell is removed: the change never
    reached QEMU, or QEMU and the record agree; one with leftovers stays until an update finishes."""
    import asyncio

    found = await asyncio.gather(*(_leftovers(lv, it, timeout) for lv, it, _ in suspects))
    out = {}
    for (lv, _, paths), left in zip(suspects, found, strict=True):
        if left:
            out[id(lv)] = left
        else:
            _clean_stale_intent(paths)
    return out


async def _leftovers(lv: _Live, it: intents.Intent, timeout: float) -> tuple[str, ...]:
    from reconciler import devplug, hotplug, qemuview, qmp

    assert lv.record is not None and it.spec is not None
    rec, boot = lv.record, lv.record.launched_spec
    names = {devplug.disk_id(d.path): d.path for d in (*rec.spec.disks, *it.spec.disks)}
    names |= {devplug.nic_id(n.mac): f"NIC {n.mac}" for n in (*rec.spec.nics, *it.spec.nics)}
    try:
        session = await qmp.connect(lv.qmp_socket, timeout)
        try:
            devices = await qemuview.read_devices(session, timeout) \
                if devplug.hotplug_machine(boot.machine) else None
            sizes = await qemuview.read_sizes(session, timeout) \
                if boot.max_memory_mib is not None or boot.max_vcpus is not None else None
        finally:
            await session.close()
    except QmpError as err:
        return (f"QEMU's devices could not be read ({err})",)
    return hotplug.leftovers(rec.plugged, sizes, devices, names)


def _clean_stale_intent(paths: layout.InstancePaths) -> None:
    try:
        has_record = statedir.read_record(paths) is not None
    except RecordError:
        has_record = True
    if has_record:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(paths.intent)
    else:
        statedir.remove_instance_files(paths)  # a launch that never got a record: nothing of it is alive
