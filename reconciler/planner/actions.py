"""The plan's vocabulary: a closed set of action kinds, reasons, field changes, and the Plan value.

Everything here is a frozen value so a plan can be compared, hashed, rendered and saved without
touching the world. Reasons explain a plan to people; the executor branches on `kind` and the flags
(`in_place`, `clean_stale`, `migration_mode`), never on the reason.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from reconciler.actual import UnreachableNode
from reconciler.model import MigrationMode, SourceRef
from reconciler.values import Value


class ActionKind(enum.StrEnum):
    NOOP = "noop"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    MIGRATE = "migrate"
    REBOOT = "reboot"  # guest reset (system_reset) in the same QEMU process; only `reconciler reboot`
    UPDATE = "update"  # rewrite the applied record only: the changed fields need no new QEMU process

    @property
    def symbol(self) -> str:
        return _SYMBOLS[self]


_SYMBOLS = {
    ActionKind.NOOP: " ",
    ActionKind.START: "+",
    ActionKind.STOP: "-",
    ActionKind.RESTART: "-/+",
    ActionKind.MIGRATE: "->",
    ActionKind.REBOOT: "@",
    ActionKind.UPDATE: "~",
}


class Reason(enum.StrEnum):
    """Why an action (or a pending change) is in the plan; `words` is what the plan shows."""

    NEW = "new"
    NOT_RUNNING = "not_running"
    STALE_PIDFILE = "stale_pidfile"
    PIDFILE_OTHER = "pidfile_other_process"
    CRASHED = "crashed"
    STOPPED_OUTSIDE = "stopped_outside"
    GUEST_POWERED_OFF = "guest_powered_off"
    SPEC_CHANGED = "spec_changed"
    NODE_CHANGED = "node_changed"
    RELOCATE = "relocate"
    STRANDED_MIGRATION = "stranded_migration"
    WANTED_STOPPED = "wanted_stopped"
    PRUNED = "pruned"
    DUPLICATE = "duplicate"
    QMP_UNRESPONSIVE = "qmp_unresponsive"
    UPDATE_PENDING = "update_pending"
    MANUAL = "manual"
    REQUESTED = "requested"  # an imperative verb: reconciler start|stop|restart|reboot
    RECORD_ONLY = "record_only"
    LIVE_UPDATE = "live_update"
    LIVE_LEFTOVERS = "live_leftovers"  # the spec is as recorded, QEMU is not: a live change killed halfway
    CHANGED_SINCE_POWEROFF = "changed_since_poweroff"

    @property
    def words(self) -> str:
        return _WORDS[self]


_WORDS = {
    Reason.NEW: "declared in the manifests, not started yet",
    Reason.NOT_RUNNING: "wanted running, not running",
    Reason.STALE_PIDFILE: "stale pidfile (process gone); cleaned up before the start",
    Reason.PIDFILE_OTHER: "QEMU is not running and its pidfile names another process (never touched); "
                          "cleaned up before the start",
    Reason.CRASHED: "QEMU crashed; the run strategy restarts it",
    Reason.STOPPED_OUTSIDE: "QEMU was stopped outside the reconciler (a signal or a QMP quit); the run "
                            "strategy restarts it",
    Reason.GUEST_POWERED_OFF: "the guest powered itself off; the run strategy restarts it",
    Reason.SPEC_CHANGED: "the spec changed; a new QEMU process is needed",
    Reason.NODE_CHANGED: "the node changed in the manifests",
    Reason.RELOCATE: "the node and the spec changed; stopped on the old node, started on the new one",
    Reason.STRANDED_MIGRATION: "left behind by an interrupted migration; restarted from scratch",
    Reason.WANTED_STOPPED: "run strategy Halted keeps it stopped",
    Reason.PRUNED: "not in the manifests; pruning is on",
    Reason.DUPLICATE: "also present on another node (interrupted migration); this copy is stopped",
    Reason.QMP_UNRESPONSIVE: "QMP unresponsive; run strategy Halted: stopped by signal (SIGTERM, SIGKILL)",
    Reason.UPDATE_PENDING: "update policy Pending: applied at the next restart",
    Reason.MANUAL: "run strategy Manual: the reconciler never starts or stops it (drift only)",
    Reason.REQUESTED: "asked for on the command line",
    Reason.RECORD_ONLY: "only fields that QEMU does not read changed; no restart needed",
    Reason.LIVE_UPDATE: "changed in the running QEMU (hotplug, balloon); no restart needed",
    Reason.LIVE_LEFTOVERS: "a live change was killed halfway: QEMU is brought back to its record, live",
    Reason.CHANGED_SINCE_POWEROFF: "the guest powered itself off and the manifests changed since: a new "
                                   "intent, so RerunOnFailure starts it",
}


class ChangeClass(enum.StrEnum):
    """How a field's change takes effect (the policy table's classes, docs/manifests.md)."""

    RESTART = "restart"  # a new QEMU process
    LIVE = "live"  # in the running QEMU, over QMP
    MIGRATE = "migrate"  # the node: a migration moves the process
    RECORD = "record"  # read by the reconciler only: the applied record is rewritten


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class FieldChange(Value):
    """One changed spec field. `old`/`new` are the values as compact JSON text ("null" when absent)."""

    path: str  # e.g. "memory_mib", "disks[0].cache", "node"
    old: str
    new: str
    forces_restart: bool
    live: bool = False  # made in the running QEMU (hotplug of memory, CPUs, disks, NICs; balloon)

    @property
    def change_class(self) -> ChangeClass:
        if self.forces_restart:
            return ChangeClass.RESTART
        if self.live:
            return ChangeClass.LIVE
        return ChangeClass.MIGRATE if self.path == "node" else ChangeClass.RECORD


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Handoff(Value):
    """A resource this action's new QEMU needs that `instance`'s stop (or restart) in an earlier phase
    releases: the reason for the phase, shown in plans."""

    instance: str
    resource: str  # e.g. "disk /srv/r.img", "VNC display :3" (planner.handoff)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Action(Value):
    """One step of a plan, on one instance.

    `node` is where the action lands (the target of a start, restart or migration; the node of a
    stop). `source_node` is the node it leaves (migrations, and restarts onto a new node). Actions with
    the same `phase` are independent and may run in parallel; phase N+1 starts after phase N is done.
    """

    name: str
    kind: ActionKind
    reason: Reason
    node: str
    source_node: str | None = None
    changes: tuple[FieldChange, ...] = ()
    phase: int = 0
    in_place: bool = False  # RESTART of a powered-off guest whose QEMU lives on: system_reset + cont
    clean_stale: bool = False  # START: remove the stale pidfile first
    by_signal: bool = False  # STOP of a verified process whose QMP does not answer: SIGTERM, then SIGKILL
    migration_mode: MigrationMode | None = None  # MIGRATE only
    max_bandwidth: int = 0  # MIGRATE only: the spec's cap in bytes/s (maxBandwidth); 0 = not capped
    memory_mib: int = 0  # memory the action puts on `node` (0 for stops)
    extra_args: tuple[str, ...] = ()  # START/RESTART: qemuExtraArgs of the new QEMU (shown in plans)
    handoffs: tuple[Handoff, ...] = ()  # START/RESTART: what it waits for another instance to release
    leftovers: tuple[str, ...] = ()  # UPDATE: what a live change killed halfway left in QEMU (undone live)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class PendingChange(Value):
    """Restart-forcing changes held back (update policy Pending, or run strategy Manual)."""

    name: str
    node: str
    reason: Reason
    changes: tuple[FieldChange, ...]


class OrphanFate(enum.StrEnum):
    """What happens (or would happen with --prune) to an instance no manifest declares."""

    STOP = "stop"  # pruning is on: the plan stops it
    WOULD_STOP = "would stop"  # pruning is off: --prune would stop it
    PROTECTED = "protected"  # protect: true; prune never stops it


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Orphan(Value):
    """An instance with a record but no manifest, and what happens to it."""

    name: str
    node: str
    state: str
    fate: OrphanFate


class ProblemKind(enum.StrEnum):
    CAPACITY = "capacity"
    PLACEMENT = "placement"
    PROTECTED = "protected"
    EMPTY_MANIFESTS = "empty_manifests"
    SPLIT_BRAIN = "split_brain"
    UNKNOWN_NODE = "unknown_node"
    UNKNOWN_TARGET = "unknown_target"
    ORDERING = "ordering"
    REFUSED = "refused"  # an imperative verb that cannot be done in the instance's current state
    PORT_IN_USE = "port_in_use"  # a migration target could not bind a fixed port (a VNC display)
    MISSING_ON_NODE = "missing_on_node"  # a file, binary or bridge a start needs is not on its node
    DISK_CREATE = "disk_create"  # a disk the plan would create cannot be (base, directory, free space)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Held(Value):
    """An instance the plan leaves alone because a node is unreachable (planner.reach)."""

    name: str
    node: str | None  # its declared node (None: unscheduled)
    reason: str


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class PlanProblem(Value):
    """An error that makes the plan unappliable; `subject` names the instance or node; `where` is the
    manifest field behind it, when there is one (shown first, as validate's problems are)."""

    kind: ProblemKind
    subject: str
    detail: str
    where: SourceRef | None = None

    @property
    def message(self) -> str:
        text = f"{self.subject}: {self.detail}"
        return text if self.where is None else f"{self.where}: {text}"


class DiskOp(enum.StrEnum):
    CREATE = "create"  # before the instance's start: the file is missing and the entry says how to make it
    DELETE = "delete"  # after its stop: an image the reconciler created, deletePolicy Delete


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class DiskChange(Value):
    """A disk image the plan creates (before `instance` starts) or deletes, one plan line each."""

    instance: str
    node: str
    path: str
    op: DiskOp
    size: int | None = None  # CREATE: the new disk's virtual size in bytes (an overlay's: its base's)
    base: str | None = None  # CREATE of an overlay: the base image (never written)
    base_format: str | None = None
    format: str = "qcow2"
    reason: str = ""  # DELETE: why ("pruned", "disk entry removed")


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Plan(Value):
    """The planner's answer: actions, pending changes, orphans and errors."""

    actions: tuple[Action, ...] = ()
    pending: tuple[PendingChange, ...] = ()
    orphans: tuple[Orphan, ...] = ()
    errors: tuple[PlanProblem, ...] = ()
    warnings: tuple[str, ...] = ()
    disks: tuple[DiskChange, ...] = ()  # images created or deleted (added by the host checks, hostcheck)
    prune: bool = False
    targets: tuple[str, ...] | None = None
    # Nodes nothing is known of in this run, and the instances left alone because of them (planner.reach).
    unreachable: tuple[UnreachableNode, ...] = ()
    held: tuple[Held, ...] = ()

    @property
    def empty(self) -> bool:
        """No action to take (pending changes, orphans and warnings are information only)."""
        return not any(a.kind is not ActionKind.NOOP for a in self.actions) and not self.disks

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind is kind)

    @property
    def phases(self) -> tuple[tuple[Action, ...], ...]:
        """Actions grouped by phase, in order."""
        top = max((a.phase for a in self.actions), default=-1)
        return tuple(tuple(a for a in self.actions if a.phase == p) for p in range(top + 1))
