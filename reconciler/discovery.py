"""Discovery: what is actually running on the nodes, as an `actual.ActualState`.

The applied records say what should exist; a pidfile alone proves nothing (QEMU deletes its own pidfile
on exit, so a guest that powered itself off leaves only its record, and a left-over pidfile may name a
PID that now belongs to someone else). An instance is live only when `procs.check` proves the process is
the one we recorded. Live instances are then asked `query-status` over their control QMP socket, all at
once, each under a short deadline: a hung monitor yields UNKNOWN instead of hanging discovery. QEMU
processes that are not ours are listed as unmanaged and never touched.

Discovery is on the path of every `status`, `plan` and `apply`, so it is kept cheap: one json.loads per
record, one psutil look at each recorded PID, and a single pass over the host's processes (name and
cmdline only) to find unmanaged QEMUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

import psutil

from reconciler import layout, procs, qmp, statedir
from reconciler.actual import ActualInstance, ActualState, RunState, StopCause, UnmanagedProcess
from reconciler.errors import LaunchError, QmpError, QmpTimeout, RecordError, StateDirError
from reconciler.executor import intent as intents
from reconciler.model import NodeSpec
from reconciler.records import AppliedRecord

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


@dataclass(frozen=True, slots=True)
class _Live:
    """An instance whose process is proved ours; its state is still to be asked over QMP."""

    base: ActualInstance
    qmp_socket: str


def discover(nodes: Iterable[NodeSpec], qmp_timeout: float = QMP_TIMEOUT) -> ActualState:
    """The actual state of `nodes` (synchronous entry point; see `discover_async`)."""
    return asyncio.run(discover_async(nodes, qmp_timeout))


async def discover_async(nodes: Iterable[NodeSpec], qmp_timeout: float = QMP_TIMEOUT) -> ActualState:
    found: list[ActualInstance] = []
    live: list[_Live] = []
    host = _HostProcesses()
    for node in nodes:
        for name in statedir.instance_names(node):
            try:
                paths = layout.instance_paths(node, name)
            except layout.InvalidInstanceName:
                continue  # not a directory we could have created
            statedir.remove_dead_temps(paths.dir)  # left by a writer killed mid-write
            item = adopt_intent(node, name, paths, host) or _inspect(node, name, paths)
            if isinstance(item, _Live):
                live.append(item)
            elif item is not None:
                found.append(item)
    statuses = await asyncio.gather(*(_query(lv.qmp_socket, qmp_timeout) for lv in live))
    found.extend(_with_status(lv.base, st) for lv, st in zip(live, statuses, strict=True))
    ours = {lv.base.pid for lv in live}
    unmanaged = [
        UnmanagedProcess(pid=p.pid, name=p.guest_name, cmdline=p.cmdline)
        for p in host.get() if p.pid not in ours
    ]
    found.sort(key=lambda i: (i.name, i.node))
    unmanaged.sort(key=lambda u: u.pid)
    return ActualState(instances=tuple(found), unmanaged=tuple(unmanaged))


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
        return ActualInstance(name=name, node=node.name, state=RunState.STALE, spec=None, pid=pidfile_pid,
                              detail="pidfile without an applied record")
    return _classify(node, record, paths, pidfile_pid, pidfile_exists)


def _classify(node: NodeSpec, record: AppliedRecord, paths: layout.InstancePaths, pidfile_pid: int | None,
              pidfile_exists: bool) -> ActualInstance | _Live:
    base = ActualInstance(name=record.name, node=node.name, state=RunState.UNKNOWN, spec=record.spec,
                          spec_hash=record.spec_hash, revision=record.revision)
    if record.stop_cause is not None and not pidfile_exists:
        return _stopped(base, record.stop_cause, "")
    # The pidfile names the process; without one, the record's PID may still be alive (pidfile removed
    # by hand): treating that as gone would let a planner start a second QEMU on the same disks.
    check = procs.check(pidfile_pid or record.pid, record.create_time, record.argv)
    if check.ours:
        detail = "" if pidfile_exists else "pidfile missing"
        return _Live(replace(base, pid=check.pid, started_at=record.create_time, detail=detail), paths.qmp)
    if pidfile_exists:
        why = check.detail if pidfile_pid is not None else "pidfile unreadable"
        return replace(base, state=RunState.STALE, pid=pidfile_pid, detail=why)
    return _stopped(base, record.stop_cause or StopCause.UNKNOWN, "QEMU exited without a recorded cause")


def _stopped(base: ActualInstance, cause: StopCause, detail: str) -> ActualInstance:
    state = RunState.STOPPED if cause in (StopCause.RECONCILER, StopCause.GUEST) else RunState.CRASHED
    return replace(base, state=state, stop_cause=cause, detail=detail)


async def _query(socket_path: str, timeout: float) -> str | QmpError:
    try:
        return await qmp.query_status(socket_path, timeout)
    except QmpError as err:
        return err


def _with_status(base: ActualInstance, status: str | QmpError) -> ActualInstance:
    if isinstance(status, QmpError):
        why = "QMP did not answer in time" if isinstance(status, QmpTimeout) else f"QMP: {status.detail}"
        return replace(base, state=RunState.UNKNOWN, detail=why)
    state = QMP_STATES.get(status, RunState.UNKNOWN)
    cause = StopCause.CRASH if state is RunState.CRASHED else None
    return replace(base, state=state, qmp_status=status, stop_cause=cause)


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
                 host: _HostProcesses) -> _Live | None:
    """Resolve an instance's intent.json (see reconciler.executor.intent), or None to inspect it as usual.

    A live process whose command line is exactly the intent's argv, started after the intent was written,
    is the instance (an apply was killed between launching it and writing the record): it is reported
    live, and once the intent's writer is gone its record is written and the intent removed. An intent
    whose process is not alive and whose writer is gone is stale: it is removed, with the runtime files
    of an instance that never got a record.
    """
    try:
        raw = statedir.read_json(paths.intent)
    except StateDirError:
        return None
    if raw is None:
        return None
    try:
        it = intents.from_jsonable(raw)
    except intents.IntentError:
        return None  # not ours to interpret; left for a person
    writer_alive = intents.owner_alive(it)
    match = _intent_process(it, host) if it.argv and it.spec is not None else None
    if match is None:
        if not writer_alive:
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


def _intent_process(it: intents.Intent, host: _HostProcesses) -> tuple[int, float] | None:
    for p in host.get():
        if p.cmdline != it.argv:
            continue
        try:
            create_time = psutil.Process(p.pid).create_time()
        except psutil.Error:
            continue
        if it.matches(p.cmdline, create_time):
            return p.pid, create_time
    return None


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
