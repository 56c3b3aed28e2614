"""What the plan's new QEMU processes need on their nodes, and the plan errors for what is not there.

The seed checked the kernel and initrd files before a start (ValidateParameters) and the QEMU binary
(Verify). Here the plan does it, for everything a start needs from its node: the kernel and initrd
files, the disks (a file or a block device), the QEMU binary (executable; a name is looked up in the
node's PATH), the bridge of each bridge-mode NIC that uses the default hook (a Linux bridge:
/sys/class/net/<bridge>/bridge), and a NIC's own hook (executable). Firmware files and base images join
this table when the model has them.

Which actions: only those that launch a QEMU. A start and a restart need the desired spec's files on the
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
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from reconciler.actual import ActualState
from reconciler.model import DesiredState, FieldRef, InstanceSpec, Kind, NicMode, NodeSpec, SourceRef
from reconciler.pathinfo import PathInfo, PathKind
from reconciler.planner.actions import ActionKind, Plan, PlanProblem, ProblemKind

BRIDGE_DIR = "/sys/class/net/{}/bridge"  # a directory exactly when the interface is a Linux bridge


class NeedKind(enum.StrEnum):
    FILE = "file"  # a regular file: kernel, initrd
    DISK = "disk"  # a regular file or a block device
    EXECUTABLE = "executable"  # qemuBinary, a NIC hook
    BRIDGE = "bridge"  # a Linux bridge


@dataclass(frozen=True, slots=True)
class Need:
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


@dataclass(frozen=True, slots=True)
class Missing:
    need: Need
    detail: str  # e.g. "'/boot/vmlinuz' does not exist on node node-a"


def needs_of(spec: InstanceSpec, node: NodeSpec) -> tuple[Need, ...]:
    """Everything a new QEMU process of `spec` needs on `node`, in manifest field order."""
    out: list[Need] = []

    def need(path: tuple[str | int, ...], value: str, kind: NeedKind, owner: Kind = Kind.INSTANCE) -> None:
        name = spec.name if owner is Kind.INSTANCE else node.name
        out.append(Need(spec.name, node.name, FieldRef(owner, name, ("spec", *path)), value, kind))

    need(("qemuBinary",), node.qemu_binary, NeedKind.EXECUTABLE, Kind.NODE)
    if spec.kernel is not None:
        need(("kernel", "path"), spec.kernel.kernel, NeedKind.FILE)
        if spec.kernel.initrd is not None:
            need(("kernel", "initrd"), spec.kernel.initrd, NeedKind.FILE)
    for i, disk in enumerate(spec.disks):
        need(("disks", i, "path"), disk.path, NeedKind.DISK)
    for i, nic in enumerate(spec.nics):
        if nic.mode is not NicMode.BRIDGE:
            continue
        if nic.hook is not None:  # the hook plugs the tap in, maybe not into a Linux bridge (e.g. OVS)
            need(("nics", i, "hook"), nic.hook, NeedKind.EXECUTABLE)
        elif nic.bridge is not None:
            need(("nics", i, "bridge"), nic.bridge, NeedKind.BRIDGE)
    return tuple(out)


def requirements(plan: Plan, desired: DesiredState, actual: ActualState) -> tuple[Need, ...]:
    """What the plan's launches need: starts and restarts the desired spec on their node, migrations the
    recorded spec on the target. Actions that launch nothing, or land on no declared node (an error of
    the plan already), need nothing."""
    recorded = {(r.name, r.node): r.spec for r in actual.instances}
    out: list[Need] = []
    for action in plan.actions:
        node = desired.nodes.get(action.node)
        if node is None:
            continue
        spec: InstanceSpec | None = None
        if action.kind is ActionKind.START or (action.kind is ActionKind.RESTART and not action.in_place):
            spec = desired.instances.get(action.name)
        elif action.kind is ActionKind.MIGRATE:
            spec = recorded.get((action.name, action.source_node or ""))
        if spec is not None:
            out += needs_of(spec, node)
    return tuple(out)


def queries(needs: Iterable[Need]) -> dict[str, frozenset[str]]:
    """Node name -> the distinct paths to ask it about."""
    by_node: dict[str, set[str]] = defaultdict(set)
    for need in needs:
        by_node[need.node].add(need.query)
    return {node: frozenset(paths) for node, paths in sorted(by_node.items())}


_NO_ANSWER = PathInfo(PathKind.ERROR, error="the node gave no answer for it")


def missing(needs: Iterable[Need], answers: Mapping[str, Mapping[str, PathInfo]]) -> tuple[Missing, ...]:
    """The needs the nodes' answers do not satisfy, each with the one-line reason."""
    out = []
    for need in needs:
        info = answers.get(need.node, {}).get(need.query, _NO_ANSWER)
        detail = _problem(need, info, "" if need.field.kind is Kind.NODE else f" on node {need.node}")
        if detail is not None:
            out.append(Missing(need, detail))
    return tuple(out)


def _problem(need: Need, info: PathInfo, on: str) -> str | None:
    """Why `info` does not satisfy `need`, or None when it does; `on` names the node (" on node n")."""
    value = repr(need.value)
    kind = info.kind
    if kind is PathKind.ERROR:
        return f"{value} cannot be checked{on}: {info.error}"
    if need.kind is NeedKind.BRIDGE:
        ok = kind is PathKind.DIRECTORY
        return None if ok else f"there is no bridge {value}{on} ({need.query} is missing)"
    if kind is PathKind.MISSING:
        return f"{value} is not found in PATH{on}" if "/" not in need.value else f"{value} does not exist{on}"
    if need.kind is NeedKind.FILE and kind is not PathKind.FILE:
        return f"{value}{on} is a {kind.value}, not a regular file"
    if need.kind is NeedKind.DISK and kind not in (PathKind.FILE, PathKind.BLOCK_DEVICE):
        return f"{value}{on} is a {kind.value}, not a disk image file or block device"
    if need.kind is NeedKind.EXECUTABLE and not (kind is PathKind.FILE and info.executable):
        found = f" ({info.resolved})" if info.resolved and info.resolved != need.value else ""
        what = "not executable" if kind is PathKind.FILE else f"a {kind.value}, not an executable file"
        return f"{value}{found}{on} is {what}"
    return None


def problems(found: Iterable[Missing], origins: Mapping[FieldRef, SourceRef]) -> tuple[PlanProblem, ...]:
    """One plan error per instance and field, placed at the field in the manifests when known.

    The subject is always the instance (so the watch daemon drops only its actions); a node's field
    (qemuBinary) says which node: `instance web1: node node-a: spec.qemuBinary: ...`."""
    out: dict[tuple[str, FieldRef], PlanProblem] = {}
    for m in found:
        ref = m.need.field
        field = ".".join(f"[{p}]" if isinstance(p, int) else p for p in ref.path).replace(".[", "[")
        prefix = f"node {ref.name}: " if ref.kind is Kind.NODE else ""
        out.setdefault((m.need.instance, ref), PlanProblem(
            ProblemKind.MISSING_ON_NODE, f"instance {m.need.instance}", f"{prefix}{field}: {m.detail}",
            origins.get(ref)))
    return tuple(p for _, p in sorted(out.items(), key=lambda kv: kv[0][0]))
