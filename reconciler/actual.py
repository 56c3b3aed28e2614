"""The actual state of the nodes, as discovery finds it.

Discovery (I/O) produces these values; the planner (pure) diffs them against `model.DesiredState`.
Keeping the types here, apart from both, lets either side be tested without the other.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from reconciler.model import InstanceSpec
from reconciler.values import Value


class RunState(enum.StrEnum):
    """What an instance we started is doing now."""

    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # guest powered off; QEMU kept alive by -no-shutdown
    INMIGRATE = "inmigrate"  # an incoming-migration target waiting for its stream
    POSTMIGRATE = "postmigrate"  # a source whose migration completed
    CRASHED = "crashed"  # QEMU gone (or guest-panicked) without a stop by us or the guest
    STOPPED = "stopped"  # no process; stopped by us or by the guest
    STALE = "stale pidfile"  # pidfile names a dead process, or a process that is not ours
    UNKNOWN = "unknown"  # our process is alive but QMP did not answer in time; or the record is unreadable

    @property
    def has_process(self) -> bool:
        return self in _ALIVE


_ALIVE = frozenset(
    {RunState.RUNNING, RunState.PAUSED, RunState.SHUTDOWN, RunState.INMIGRATE, RunState.POSTMIGRATE,
     RunState.UNKNOWN}
)


class StopCause(enum.StrEnum):
    """Why an instance is not running, as recorded (a stop by us, a guest power-off) or inferred by discovery
    from what QEMU left behind. Kept in the record (`stop_cause`) and shown by `status`."""

    RECONCILER = "reconciler"  # we stopped it (apply, prune, migration source)
    GUEST = "guest"  # the guest powered itself off
    CRASH = "crash"  # QEMU ended without removing its pidfile (SIGKILL, a crash), or the guest panicked
    KILLED = "killed"  # QEMU exited cleanly, not by us: a signal it handled (SIGTERM...) or another's quit
    UNKNOWN = "unknown"

    @property
    def words(self) -> str:
        return _CAUSE_WORDS[self]


_CAUSE_WORDS = {
    StopCause.RECONCILER: "stopped by the reconciler",
    StopCause.GUEST: "the guest powered off",
    StopCause.CRASH: "crashed",
    StopCause.KILLED: "stopped outside the reconciler",
    StopCause.UNKNOWN: "no cause recorded",
}


class Activity(enum.StrEnum):
    """What an unfinished action (an intent whose writer still runs) is doing to an instance."""

    STARTING = "starting"
    STOPPING = "stopping"
    RESETTING = "resetting"  # in-place restart: system_reset + cont
    UPDATING = "updating its record"  # a record-only update: no process is touched
    MIGRATING_OUT = "migrating out"
    MIGRATING_IN = "migrating in"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class InFlight(Value):
    """An action in progress on an instance, from its intent: what, by which program, and its PID."""

    name: str
    node: str
    activity: Activity
    command: str  # the writer's reconciler command ("apply", "watch", ...), or "reconciler" if unknown
    pid: int
    peer_node: str | None = None  # the other end of a migration

    @property
    def label(self) -> str:
        """E.g. "stopping (apply, PID 123)"."""
        peer = f" {'to' if self.activity is Activity.MIGRATING_OUT else 'from'} {self.peer_node}" \
            if self.peer_node and self.activity in (Activity.MIGRATING_OUT, Activity.MIGRATING_IN) else ""
        return f"{self.activity.value}{peer} ({self.command}, PID {self.pid})"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ActualInstance(Value):
    """One instance with an applied record on one node."""

    name: str
    node: str
    state: RunState
    spec: InstanceSpec | None  # the spec it was started with (the applied record); None if unreadable
    spec_hash: str | None = None
    pid: int | None = None
    started_at: float | None = None  # epoch seconds of the QEMU process start
    stop_cause: StopCause | None = None  # set when the process is gone
    revision: str | None = None  # git revision of the manifests it was applied from
    detail: str = ""  # one line for humans, e.g. why a pidfile is stale
    qmp_status: str | None = None  # QEMU's own run state from query-status (e.g. "finish-migrate")
    pidfile_foreign: bool = False  # STALE: the pidfile names a live process that is not ours
    stopped_at: float | None = None  # epoch seconds, when the record says when it stopped
    # UNKNOWN only: the process is proved ours (pid alive, start time and argv as recorded) and its QMP
    # did not answer. Such a process can still be stopped by signal; an unreadable record cannot.
    qmp_unresponsive: bool = False
    # The spec its QEMU was started with, when live changes made it differ from `spec` (the record's
    # boot_spec): what may be removed live, and what a restart would change.
    boot_spec: InstanceSpec | None = None
    # What a live change killed halfway left in QEMU, unlike the record (hotplug.leftovers): read from
    # query-pci/-block/-memory-devices/-hotpluggable-cpus when a live update's intent outlived its writer.
    leftovers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class UnmanagedProcess(Value):
    """A QEMU process on the host that we did not start: listed, never touched."""

    pid: int
    name: str | None  # from -name, when present
    cmdline: tuple[str, ...]
    machine: str = "local"  # NodeSpec.machine of the host it runs on (PIDs are per host)


class Reach(enum.StrEnum):
    """Why a node could not be looked at."""

    UNREACHABLE = "unreachable"  # refused, timed out, authentication failed, or lost mid-discovery
    HOST_KEY = "host key rejected"  # the host's key is not the known one: a possible attack
    NO_AGENT = "no agent"  # the host has no usable `reconciler agent` (missing, or another version)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class UnreachableNode(Value):
    """A node nothing is known of in this run: nothing is planned on it, and nothing it may run is started
    elsewhere (without fencing, a second copy could run)."""

    node: str
    reach: Reach
    detail: str  # one line: the host and the cause

    @property
    def line(self) -> str:
        return f"node {self.node}: {self.reach.value}: {self.detail}"

    @property
    def error(self) -> str:
        """The one line a run prints on stderr for it (and then exits 1)."""
        if self.reach is Reach.HOST_KEY:
            return f"error: {self.line} (a possible attack: the host key changed; not retried)"
        return f"error: {self.line}"

    def to_json(self) -> dict[str, str]:
        return {"node": self.node, "reach": self.reach.value, "detail": self.detail}


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class ActualState(Value):
    """What the nodes run and hold now, as discovery found it."""

    instances: tuple[ActualInstance, ...] = ()
    unmanaged: tuple[UnmanagedProcess, ...] = ()
    in_flight: tuple[InFlight, ...] = ()  # actions other runs are carrying out right now (their intents)
    unreachable: tuple[UnreachableNode, ...] = ()  # by node name

    def find(self, name: str) -> tuple[ActualInstance, ...]:
        """Every record of `name` (more than one means it exists on several nodes)."""
        return tuple(i for i in self.instances if i.name == name)

    def flight(self, name: str, node: str | None) -> InFlight | None:
        """The action in progress on `name` (on `node`, when given)."""
        return next((f for f in self.in_flight if f.name == name and node in (None, f.node)), None)

    def __iter__(self) -> Iterator[ActualInstance]:
        return iter(self.instances)
