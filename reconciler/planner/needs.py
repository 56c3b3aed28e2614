"""What the plan's new QEMU processes need on their nodes, and the plan errors for what is not there.

The seed checked the kernel and initrd files before a start (ValidateParameters) and the QEMU binary
(Verify). Here the plan does it, for everything a start needs from its node: the kernel and initrd
files, the disks (a file or a block device), the QEMU binary (executable; a name is looked up in the
node's PATH), the bridge of each bridge-mode NIC that uses the default hook (a Linux bridge:
/sys/class/net/<bridge>/bridge), and a NIC's own hook (executable). A disk the reconciler creates (size,
baseImage) may also be missing: planner.disks then plans its creation.

Which actions: those that launch a QEMU, and live updates that add disks or NICs (only those are needed:
the QEMU holds the rest). A start and a restart need the desired spec's files on the
node they land on; a migration's target needs the recorded spec's files (a migration keeps the running
configuration). An in-place restart (system_reset in the same process) and a stop need nothing; so does
an instance that keeps running: its QEMU holds what it opened and loaded, so a kernel file deleted under a
running instance matters only when a plan would start it again, and that plan says so.

Pure, in three steps around the one I/O step (`Node.check_paths`, one call per node, one stat per
distinct path): `requirements` (what to ask), `missing` (what the answers lack), `problems` (PlanProblems,
placed at the manifest field by the caller's `manifest.origin` lookup).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from reconciler.actual import ActualState
from reconciler.model import DesiredState, FieldRef, InstanceSpec, Kind, NicMode, NodeSpec, SourceRef
from reconciler.pathinfo import PathInfo, PathKind
from reconciler.planner.actions import ActionKind, Plan, PlanProblem, ProblemKind, Reason
from reconciler.values import Value

BRIDGE_DIR = "/sys/class/net/{}/bridge"  # a directory exactly when the interface is a Linux bridge


class NeedKind(enum.StrEnum):
    FILE = "file"  # a regular file: kernel, initrd
    DISK = "disk"  # a regular file or a block device
    EXECUTABLE = "executable"  # qemuBinary, a NIC hook
    BRIDGE = "bridge"  # a Linux bridge
    NEW_DISK = "new disk"  # a disk with size/baseImage: a file or a block device, or missing (created)


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Need(Value):
    """One thing `instance` needs on `node`: `value` (a path, command name or bridge name) from `field`."""

    instance: str
    node: str
    field: FieldRef
    value: str
    kind: NeedKind

    @property
    def query(self) -> str:
        """The path asked of the node."""
        return BRIDGE_DIR.format(self.value) if self.kind is NeedKind.BRIDGE else self.value


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Missing(Value):
    """A need of the plan that its node cannot meet."""

    need: Need
    detail: str  # e.g. "'/boot/vmlinuz' does not exist on node node-a"


FieldPath = tuple[str | int, ...]
_QEMU_BINARY: FieldPath = ("spec", "qemuBinary")
_KERNEL: FieldPath = ("spec", "kernel", "path")
_INITRD: FieldPath = ("spec", "kernel", "initrd")
_FIRMWARE: FieldPath = ("spec", "firmware")
_SECURE_BOOT: FieldPath = ("spec", "secureBoot")


def _wants(spec: InstanceSpec, node: NodeSpec, create: bool = True,
           live: frozenset[str] | None = None) -> Iterator[tuple[NeedKind, str, FieldPath, Kind]]:
    """The table: (kind, value, manifest field, the kind of object declaring it), in field order.
    `create`: a missing provisioned disk is created (a start); a migration's target needs it there.
    `live`: a live update of a running QEMU, which needs only the disks and NICs it adds (paths, MACs)."""
    if live is not None:
        for i, disk in enumerate(spec.disks):
            if disk.path in live:
                kind = NeedKind.NEW_DISK if disk.provisioned else NeedKind.DISK
                yield kind, disk.path, ("spec", "disks", i, "path"), Kind.INSTANCE
        yield from _nic_wants(spec, live)
        return
    yield NeedKind.EXECUTABLE, node.qemu_binary, _QEMU_BINARY, Kind.NODE
    if spec.kernel is not None:
        yield NeedKind.FILE, spec.kernel.kernel, _KERNEL, Kind.INSTANCE
        if spec.kernel.initrd is not None:
            yield NeedKind.FILE, spec.kernel.initrd, _INITRD, Kind.INSTANCE
    from reconciler.firmware import ovmf_of

    ovmf = ovmf_of(spec)
    if ovmf is not None:  # firmware uefi: OVMF's code and its variable-store template (package ovmf)
        field = _SECURE_BOOT if spec.secure_boot else _FIRMWARE  # the secure-boot build's files
        yield NeedKind.FILE, ovmf.code, field, Kind.INSTANCE
        yield NeedKind.FILE, ovmf.vars_template, field, Kind.INSTANCE
    for i, disk in enumerate(spec.disks):
        kind = NeedKind.NEW_DISK if create and disk.provisioned else NeedKind.DISK
        yield kind, disk.path, ("spec", "disks", i, "path"), Kind.INSTANCE
    yield from _nic_wants(spec, None)


def _nic_wants(spec: InstanceSpec,
               only: frozenset[str] | None) -> Iterator[tuple[NeedKind, str, FieldPath, Kind]]:
    for i, nic in enumerate(spec.nics):
        if nic.mode is not NicMode.BRIDGE or (only is not None and nic.mac not in only):
            continue
        if nic.hook is not None:  # the hook plugs the tap in, maybe not into a Linux bridge (e.g. OVS)
            yield NeedKind.EXECUTABLE, nic.hook, ("spec", "nics", i, "hook"), Kind.INSTANCE
        elif nic.bridge is not None:
            yield NeedKind.BRIDGE, nic.bridge, ("spec", "nics", i, "bridge"), Kind.INSTANCE


def needs_of(spec: InstanceSpec, node: NodeSpec, create: bool = True,
             live: frozenset[str] | None = None) -> tuple[Need, ...]:
    """Everything a new QEMU process of `spec` needs on `node` (`live`: what a live update adds), in
    manifest field order."""
    return tuple(
        Need(spec.name, node.name, FieldRef(owner, spec.name if owner is Kind.INSTANCE else node.name, path),
             value, kind)
        for kind, value, path, owner in _wants(spec, node, create, live)
    )


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Requirements(Value):
    """The plan's launches (spec, node) and, per node, the distinct values each kind of need asks for.

    Kept apart so the common case (everything there) costs a set insertion per need and one look per
    distinct path; `Need` objects with their fields are made only for the instances something fails."""

    launches: tuple[tuple[InstanceSpec, NodeSpec], ...] = ()
    wanted: Mapping[str, Mapping[NeedKind, frozenset[str]]] = field(default_factory=dict)
    incoming: frozenset[tuple[str, str]] = frozenset()  # (instance, node) of migration targets: no creating
    # (instance, node) of live updates -> the paths and MACs of the disks and NICs they add
    live: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    def creates(self, spec: InstanceSpec, node: NodeSpec) -> bool:
        """Whether this launch creates its missing provisioned disks (a start does; a migration not)."""
        return (spec.name, node.name) not in self.incoming

    def __bool__(self) -> bool:
        return bool(self.launches)

    def queries(self) -> dict[str, frozenset[str]]:
        """Node name -> the distinct paths to ask it about."""
        return {node: frozenset().union(*(_queries(kind, values) for kind, values in kinds.items()))
                for node, kinds in self.wanted.items()}


def _queries(kind: NeedKind, values: Iterable[str]) -> Iterable[str]:
    return [BRIDGE_DIR.format(v) for v in values] if kind is NeedKind.BRIDGE else values


def requirements(plan: Plan, desired: DesiredState, actual: ActualState) -> Requirements:
    """What the plan's launches need: starts and restarts the desired spec on their node, migrations the
    recorded spec on the target. Actions that launch nothing, or land on no declared node (an error of
    the plan already), need nothing."""
    recorded = {(r.name, r.node): r.spec for r in actual.instances if r.spec is not None}
    launches: list[tuple[InstanceSpec, NodeSpec]] = []
    incoming: set[tuple[str, str]] = set()
    live: dict[tuple[str, str], frozenset[str]] = {}
    wanted: dict[str, dict[NeedKind, set[str]]] = {}
    for action in plan.actions:
        node = desired.nodes.get(action.node)
        if node is None:
            continue
        spec: InstanceSpec | None = None
        if action.kind is ActionKind.START or (action.kind is ActionKind.RESTART and not action.in_place):
            spec = desired.instances.get(action.name)
        elif action.kind is ActionKind.MIGRATE:
            spec = recorded.get((action.name, action.source_node or ""))
            incoming.add((action.name, node.name))
        elif action.kind is ActionKind.UPDATE and action.reason is Reason.LIVE_UPDATE:
            spec = desired.instances.get(action.name)
            added = _added_live(spec, actual, action.name, node.name)
            if not added:
                continue
            live[(action.name, node.name)] = added
        if spec is None:
            continue
        launches.append((spec, node))
        kinds = wanted.get(node.name)
        if kinds is None:
            kinds = wanted[node.name] = {kind: set() for kind in NeedKind}
        for kind, value, _, _ in _wants(spec, node, (action.name, node.name) not in incoming,
                                        live.get((action.name, node.name))):
            kinds[kind].add(value)
    return Requirements(tuple(launches), {
        node: {kind: frozenset(values) for kind, values in kinds.items() if values}
        for node, kinds in sorted(wanted.items())
    }, frozenset(incoming), live)


def _added_live(spec: InstanceSpec | None, actual: ActualState, name: str, node: str) -> frozenset[str]:
    """The paths and MACs of the disks and NICs a live update of `name` on `node` adds."""
    rec = next((r for r in actual.instances if r.name == name and r.node == node), None)
    if spec is None or rec is None or rec.spec is None:
        return frozenset()
    from reconciler import devplug

    boot = rec.boot_spec or rec.spec
    change = devplug.device_change(boot, rec.spec, spec)
    if change is None:
        return frozenset()
    return frozenset([d.path for d in change.add_disks] + [n.mac for n in change.add_nics])


_NO_ANSWER = PathInfo(PathKind.ERROR, error="the node gave no answer for it")


def missing(reqs: Requirements, answers: Mapping[str, Mapping[str, PathInfo]]) -> tuple[Missing, ...]:
    """The needs the nodes' answers do not satisfy, each with the one-line reason, in plan order."""
    failing: set[tuple[str, NeedKind, str]] = set()
    for name, kinds in reqs.wanted.items():
        said = answers.get(name, {})
        for kind, values in kinds.items():
            for value, query in zip(values, _queries(kind, values), strict=True):
                if not _ok(kind, said.get(query, _NO_ANSWER)):
                    failing.add((name, kind, value))
    if not failing:
        return ()
    out = []
    for spec, node in reqs.launches:
        for need in needs_of(spec, node, reqs.creates(spec, node), reqs.live.get((spec.name, node.name))):
            if (need.node, need.kind, need.value) in failing:
                info = answers.get(need.node, {}).get(need.query, _NO_ANSWER)
                on = "" if need.field.kind is Kind.NODE else f" on node {need.node}"
                out.append(Missing(need, _problem(need.kind, need.value, info, on) or ""))
    return tuple(out)


_SATISFY = {
    NeedKind.FILE: frozenset({PathKind.FILE}),
    NeedKind.DISK: frozenset({PathKind.FILE, PathKind.BLOCK_DEVICE}),
    NeedKind.EXECUTABLE: frozenset({PathKind.FILE}),  # and executable
    NeedKind.BRIDGE: frozenset({PathKind.DIRECTORY}),
    NeedKind.NEW_DISK: frozenset({PathKind.FILE, PathKind.BLOCK_DEVICE, PathKind.MISSING}),
}


def _ok(need: NeedKind, info: PathInfo) -> bool:
    return info.kind in _SATISFY[need] and (info.executable or need is not NeedKind.EXECUTABLE)


def _problem(need: NeedKind, raw: str, info: PathInfo, on: str) -> str | None:
    """Why `info` (the answer about `raw`) does not satisfy a need of kind `need`, or None when it does;
    `on` names the node (" on node n")."""
    value = repr(raw)
    kind = info.kind
    if kind is PathKind.ERROR:
        return f"{value} cannot be checked{on}: {info.error}"
    if need is NeedKind.BRIDGE:
        ok = kind is PathKind.DIRECTORY
        return None if ok else f"there is no bridge {value}{on} ({BRIDGE_DIR.format(raw)} is missing)"
    if need is NeedKind.NEW_DISK:  # missing is fine: the plan creates it (planner.disks)
        ok = kind in _SATISFY[need]
        return None if ok else f"{value}{on} is {_A[kind]}, not a disk image file or block device"
    if kind is PathKind.MISSING:
        return f"{value} is not found in PATH{on}" if "/" not in raw else f"{value} does not exist{on}"
    if need is NeedKind.FILE and kind is not PathKind.FILE:
        return f"{value}{on} is {_A[kind]}, not a regular file"
    if need is NeedKind.DISK and kind not in (PathKind.FILE, PathKind.BLOCK_DEVICE):
        return f"{value}{on} is {_A[kind]}, not a disk image file or block device"
    if need is NeedKind.EXECUTABLE and not (kind is PathKind.FILE and info.executable):
        found = f" ({info.resolved})" if info.resolved and info.resolved != raw else ""
        what = "not executable" if kind is PathKind.FILE else f"{_A[kind]}, not an executable file"
        return f"{value}{found}{on} is {what}"
    return None


_A = {
    PathKind.FILE: "a regular file", PathKind.DIRECTORY: "a directory",
    PathKind.BLOCK_DEVICE: "a block device", PathKind.OTHER: "a special file",
    PathKind.MISSING: "missing", PathKind.ERROR: "unreadable",
}


def field_text(path: FieldPath) -> str:
    """("spec", "disks", 0, "path") -> "spec.disks[0].path" (as validate names fields)."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def problems(found: Iterable[Missing], origins: Mapping[FieldRef, SourceRef]) -> tuple[PlanProblem, ...]:
    """One plan error per instance and field, placed at the field in the manifests when known.

    The subject is always the instance (so the watch daemon drops only its actions); a node's field
    (qemuBinary) says which node: `instance web1: node node-a: spec.qemuBinary: ...`."""
    out: dict[tuple[str, FieldRef], PlanProblem] = {}
    for m in found:
        ref = m.need.field
        prefix = f"node {ref.name}: " if ref.kind is Kind.NODE else ""
        out.setdefault((m.need.instance, ref), PlanProblem(
            ProblemKind.MISSING_ON_NODE, f"instance {m.need.instance}",
            f"{prefix}{field_text(ref.path)}: {m.detail}", origins.get(ref)))
    return tuple(p for _, p in sorted(out.items(), key=lambda kv: kv[0][0]))
