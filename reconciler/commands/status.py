"""`reconciler status`: desired vs actual state of every instance, one row each.

Shows what the manifests want next to what discovery finds, including what the manifests do not know:
instances with a record but no manifest (orphans) and QEMU processes we did not start (unmanaged). Broken
manifests do not hide the actual state: it is still shown, and the problems' count goes to stderr. Without
Node manifests (no ./manifests), the state directories come from the running QEMUs we started. Each row
says why a stopped instance stopped, what the next apply would do (the plan), and which action another run
is carrying out on it (its intent). Rows are built by a pure function (`build_rows`) and rendered as an
aligned table or stable JSON (docs/status.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from reconciler import discovery, model
from reconciler.actual import (
    ActualInstance,
    ActualState,
    InFlight,
    RunState,
    UnmanagedProcess,
    UnreachableNode,
)
from reconciler.errors import InstanceNotFound, UsageError
from reconciler.values import Value

if TYPE_CHECKING:
    from reconciler.agentinfo import AgentInfo
    from reconciler.node import Node
    from reconciler.planner import Plan
    from reconciler.watch.statusfile import WatchStatus

AgentsToAsk = Callable[[ActualState], Sequence[tuple[str, str]]]  # (node, instance) from what was found

DEFAULT_MANIFESTS = "manifests"
JSON_FORMAT_VERSION = 1

_DESIRED = {
    model.RunStrategy.ALWAYS: "running",
    model.RunStrategy.RERUN_ON_FAILURE: "running",
    model.RunStrategy.ONCE: "once",
    model.RunStrategy.MANUAL: "manual",
    model.RunStrategy.HALTED: "stopped",
}
_MIGRATING = frozenset({"inmigrate", "finish-migrate"})


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Pending(Value):
    """What the next apply would do to the instance (from the plan), or a change it holds back."""

    action: str  # an ActionKind value ("start", "stop", ...), or "pending" for a held-back change
    reason: str  # a planner Reason value
    words: str  # the reason as the plan shows it


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class Row(Value):
    """One line of the `status` table."""

    name: str
    node: str | None
    desired: str  # from the run strategy; "orphan" = record without manifest; "-" = unmanaged
    actual: str
    pid: int | None
    memory_mib: int | None
    vcpus: int | None
    uptime: float | None  # seconds
    spec_match: bool | None  # running spec == manifest spec; None when either is unknown
    detail: str = ""
    stop_cause: str | None = None  # a StopCause value when the process is gone (or the guest panicked)
    stopped_at: float | None = None  # epoch seconds, when the record says
    in_flight: InFlight | None = None  # an action another run is carrying out now (from its intent)
    pending: tuple[Pending, ...] = ()  # what the next apply would do (needs valid manifests)
    agent: AgentInfo | None = None  # guestAgent: whether it answers, the guest's interfaces (issue 14)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output (stable format)")
    parser.add_argument("--status-file", metavar="FILE",
                        help="the watch daemon's status file, when it runs with --status-file "
                        "(default: <first node's stateDir>/watch-status.json)")
    parser.add_argument("targets", nargs="*", metavar="NAME|PATH",
                        help="instance names to show, and manifest files/directories "
                        f"(default ./{DEFAULT_MANIFESTS})")
    parser.add_argument("--node", metavar="NAME", help="show only this node's instances (and ask only it)")


def run(args: argparse.Namespace) -> int:
    from reconciler import phases

    names, paths = split_targets(args.targets)
    if not paths and not os.path.exists(DEFAULT_MANIFESTS):
        print(f"note: no ./{DEFAULT_MANIFESTS}; showing the instances found from running QEMU processes",
              file=sys.stderr)
        desired, nodes = None, list[model.NodeSpec]()
    else:
        desired, nodes = load_desired(paths)
    phases.mark("manifest load")
    if args.node is not None:
        if args.node not in {n.name for n in nodes}:
            raise UsageError(f"--node {args.node}: not declared in the manifests")
        nodes = [n for n in nodes if n.name == args.node]
    actual, agents = discover_nodes(nodes, _agents_shown(args.node, names))
    # No Node manifests (no ./manifests, or they are gone): the state dirs of running QEMUs we started.
    found = discovery.nodes_of_processes() if not nodes else []
    phases.mark("discovery")
    plan = _plan(desired, actual)
    phases.mark("plan")
    if found:
        from reconciler.node import merge_states

        actual = merge_states([actual, discovery.discover(found)])
    now = time.time()
    rows = build_rows(desired, actual, now, plan)
    if args.node is not None:
        rows = [r for r in rows if r.node == args.node]
    if names:
        missing = sorted(set(names) - {r.name for r in rows})
        if missing:
            raise InstanceNotFound(missing[0])
        rows = [r for r in rows if r.name in names]
    rows = _with_agents(rows, agents)
    watch = _watch_status(nodes or found, args.status_file)  # what a `watch` daemon reported, if one ran
    if watch is not None:
        rows = _with_watch_details(rows, watch, now)
    if args.json:
        doc = render_json(rows, actual.unreachable)
        print(doc if watch is None else _with_watch_json(doc, watch))
    else:
        print(render_table(rows), end="")
        if actual.unreachable:
            print("\n".join(["", *(f"{u.line}" for u in actual.unreachable)]))
        if watch is not None:
            from reconciler.watch import statusfile

            print("\n".join(["", *statusfile.summary_lines(watch, now, statusfile.daemon_alive(watch))]))
    phases.mark("render")
    if actual.unreachable:
        for u in actual.unreachable:
            print(u.error, file=sys.stderr)
        return 1
    return 0


def discover_nodes(nodes: Sequence[model.NodeSpec], agents_to_ask: AgentsToAsk | None = None
                   ) -> tuple[ActualState, Mapping[tuple[str, str], AgentInfo]]:
    """Every node's instances: on this machine directly, remote ones over SSH, all at once (an unreachable
    node is in `unreachable`, with its reason). Then, over the same links, the guest agents of the
    instances `agents_to_ask` picks from what was found: (node, instance) -> what the agent says."""
    if all(n.ssh is None for n in nodes):
        actual = discovery.discover(nodes)
        wanted = agents_to_ask(actual) if agents_to_ask is not None else []
        if not wanted:
            return actual, {}
        import asyncio

        from reconciler.node import local_nodes

        return actual, asyncio.run(_ask_agents(local_nodes(nodes), wanted))

    import asyncio

    from reconciler import fleet

    async def go() -> tuple[ActualState, Mapping[tuple[str, str], AgentInfo]]:
        async with fleet.opened(nodes) as opened:
            actual = await opened.discover()
            wanted = agents_to_ask(actual) if agents_to_ask is not None else []
            return actual, await _ask_agents(opened.nodes, wanted)

    return asyncio.run(go())


def _agents_shown(node: str | None, names: Sequence[str]) -> AgentsToAsk:
    """The running instances started with a guest agent (guestAgent) that the table will show."""
    def pick(actual: ActualState) -> list[tuple[str, str]]:
        return [(i.node, i.name) for i in actual.instances
                if i.state.has_process and i.spec is not None and i.spec.guest_agent
                and (node is None or i.node == node) and (not names or i.name in names)]
    return pick


def _with_agents(rows: list[Row], agents: Mapping[tuple[str, str], AgentInfo]) -> list[Row]:
    if not agents:
        return rows
    return [replace(r, agent=agents.get((r.node or "", r.name))) for r in rows]


async def _ask_agents(nodes: Mapping[str, Node], wanted: Sequence[tuple[str, str]]
                      ) -> Mapping[tuple[str, str], AgentInfo]:
    """Ask the guest agent of each (node, instance) in `wanted` whose node is reachable, all at once."""
    reachable = [(nodes[n], name) for n, name in wanted if n in nodes]
    if not reachable:
        return {}
    from reconciler import agentinfo

    return await agentinfo.ask_all(reachable)


def _plan(desired: model.DesiredState | None, actual: ActualState) -> Plan | None:
    if desired is None:
        return None
    from reconciler.planner import make_plan  # imported here: only status with valid manifests needs it

    return make_plan(desired, actual)


def _watch_status(nodes: Sequence[model.NodeSpec], explicit: str | None) -> WatchStatus | None:
    from reconciler.watch import statusfile

    if explicit is None:
        path = statusfile.default_path(nodes)
        return statusfile.read(path) if path is not None else None
    status = statusfile.read(explicit)
    if status is None:
        raise UsageError(f"--status-file {explicit}: not a readable watch status file")
    return status


def _with_watch_details(rows: list[Row], watch: WatchStatus, now: float) -> list[Row]:
    from reconciler.watch import statusfile

    details = statusfile.row_details(watch, now)
    return [replace(r, detail="; ".join(filter(None, [r.detail, details[r.name]])))
            if r.name in details else r for r in rows]


def _with_watch_json(text: str, watch: WatchStatus) -> str:
    from reconciler.watch import statusfile

    doc = json.loads(text)
    doc["watch"] = {**statusfile.to_json(watch), "alive": statusfile.daemon_alive(watch)}
    return json.dumps(doc, indent=2, sort_keys=True)


# --- shared with console and node-info ------------------------------------------------------------------


def split_targets(targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """Instance names vs manifest paths: names are DNS labels, so anything with '/' or '.' is a path."""
    names: list[str] = []
    paths: list[str] = []
    for t in targets:
        (paths if "/" in t or "." in t or os.path.exists(t) else names).append(t)
    return names, paths


def load_desired(paths: Sequence[str]) -> tuple[model.DesiredState | None, list[model.NodeSpec]]:
    """The desired state (None if the manifests have problems, whose count goes to stderr) and the nodes.

    Nodes come from the manifests even when instances have problems, so actual state can still be shown.
    """
    from reconciler import manifest  # imported here: the schema machinery is not needed otherwise

    wanted = list(paths) or [DEFAULT_MANIFESTS]
    result = manifest.load(wanted)
    if result.desired is not None:
        return result.desired, [result.desired.nodes[k] for k in sorted(result.desired.nodes)]
    n = len(result.problems)
    print(f"warning: {n} problem{'s' if n != 1 else ''} in the manifests (see `reconciler validate`);"
          " showing actual state only", file=sys.stderr)
    return None, _valid_nodes(wanted)


def _valid_nodes(paths: Sequence[str]) -> list[model.NodeSpec]:
    """The Node documents that are valid on their own, so broken Instances do not hide actual state."""
    from reconciler import manifest
    from reconciler.manifest import build

    nodes: dict[str, model.NodeSpec] = {}
    for parsed in manifest.parse_paths(manifest.discover(paths).files):
        for doc in parsed.documents:
            if doc.valid and doc.kind == model.Kind.NODE and doc.name not in nodes:
                meta = doc.body.get("metadata", {})
                node, issues = build.build_node(doc.name, build.labels_of(meta), doc.body["spec"], doc.path)
                if node is not None and not issues:
                    nodes[doc.name] = node
    return [nodes[k] for k in sorted(nodes)]


# --- pure core ------------------------------------------------------------------------------------------


def actual_label(inst: ActualInstance) -> str:
    if inst.qmp_status in _MIGRATING:
        return "migrating"
    if inst.state is RunState.POSTMIGRATE:
        return "migrated"
    return inst.state.value


def build_rows(desired: model.DesiredState | None, actual: ActualState, now: float,
               plan: Plan | None = None) -> list[Row]:
    declared = desired.instances if desired is not None else {}
    rows: list[Row] = []
    unreachable = {u.node: u for u in actual.unreachable}
    for name, spec in declared.items():
        found = actual.find(name)
        if not found and unreachable:  # it may run where we cannot look
            lost = unreachable.get(spec.node) if spec.node is not None else None
            words = (f"node {spec.node} is unreachable" if lost is not None
                     else f"not on any reachable node ({', '.join(sorted(unreachable))} unreachable)")
            rows.append(Row(name, spec.node, _DESIRED[spec.run_strategy], RunState.UNKNOWN.value, None,
                            spec.memory_mib, spec.vcpus, None, None, words))
        elif not found:
            rows.append(Row(name, spec.node, _DESIRED[spec.run_strategy], RunState.STOPPED.value, None,
                            spec.memory_mib, spec.vcpus, None, None, "never started",
                            in_flight=actual.flight(name, spec.node)))
        rows.extend(_row(inst, _DESIRED[spec.run_strategy], spec, now, actual) for inst in found)
    orphan = "orphan" if desired is not None else "?"  # without manifests we cannot call anything orphan
    rows.extend(_row(inst, orphan, None, now, actual) for inst in actual if inst.name not in declared)
    if plan is not None:
        rows = [replace(r, pending=pending_of(plan, r.name, r.node)) for r in rows]
    rows.sort(key=lambda r: (r.name, r.node or ""))
    rows.extend(_unmanaged_row(u) for u in actual.unmanaged)
    return rows


def pending_of(plan: Plan, name: str, node: str | None) -> tuple[Pending, ...]:
    """The plan's actions and held-back changes for the instance `name` on `node` (any node if None)."""
    from reconciler.planner import ActionKind

    def here(*nodes: str | None) -> bool:
        return node is None or node in nodes

    found = [Pending(a.kind.value, a.reason.value, a.reason.words) for a in plan.actions
             if a.name == name and a.kind is not ActionKind.NOOP and here(a.node, a.source_node)]
    found += [Pending("pending", p.reason.value, p.reason.words) for p in plan.pending
              if p.name == name and here(p.node)]
    return tuple(found)


def _row(inst: ActualInstance, desired: str, spec: model.InstanceSpec | None, now: float,
         actual: ActualState) -> Row:
    shown = inst.spec or spec
    alive = inst.state.has_process and inst.pid is not None
    match = None
    if spec is not None and inst.spec_hash is not None:
        match = inst.spec_hash == model.spec_hash(spec)
    gone = inst.state in (RunState.STOPPED, RunState.CRASHED)
    detail = inst.detail or (inst.stop_cause.words if gone and inst.stop_cause is not None else "")
    return Row(
        name=inst.name, node=inst.node, desired=desired, actual=actual_label(inst),
        pid=inst.pid if alive or inst.state is RunState.STALE else None,
        memory_mib=shown.memory_mib if shown else None, vcpus=shown.vcpus if shown else None,
        uptime=round(max(now - inst.started_at, 0.0), 1) if alive and inst.started_at else None,
        spec_match=match, detail=detail,
        stop_cause=inst.stop_cause.value if inst.stop_cause is not None else None,
        stopped_at=inst.stopped_at if gone else None,
        in_flight=actual.flight(inst.name, inst.node),
    )


def _unmanaged_row(u: UnmanagedProcess) -> Row:
    return Row(u.name or "-", None, "-", "unmanaged", u.pid, _memory_arg(u.cmdline), None, None, None,
               "not started by the reconciler")


def _memory_arg(cmdline: Sequence[str]) -> int | None:
    """MiB from a plain `-m N` / `-m size=N`; None if absent or with a unit suffix we do not parse."""
    for flag, value in itertools.pairwise(cmdline):
        if flag == "-m":
            v = value.split(",")[0].removeprefix("size=").removesuffix("M")
            return int(v) if v.isdigit() else None
    return None


def format_uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


_HEADERS = ("NAME", "NODE", "DESIRED", "ACTUAL", "PID", "MEMORY", "VCPUS", "UPTIME", "SPEC", "DETAIL")


def render_table(rows: Iterable[Row]) -> str:
    cells = [_HEADERS] + [
        (r.name, r.node or "-", r.desired, r.in_flight.label if r.in_flight else r.actual,
         str(r.pid) if r.pid else "-", f"{r.memory_mib}M" if r.memory_mib else "-",
         str(r.vcpus) if r.vcpus else "-", format_uptime(r.uptime),
         {True: "match", False: "differs", None: "-"}[r.spec_match], _detail(r))
        for r in rows
    ]
    if len(cells) == 1:
        return "no instances\n"
    widths = [max(len(c[i]) for c in cells) for i in range(len(_HEADERS))]
    return "".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
                   for line in cells)


def _detail(r: Row) -> str:
    return "; ".join(filter(None, [r.detail, r.agent.words if r.agent is not None else "", *(
        f"pending: {p.words}" if p.action == "pending" else f"next apply: {p.action} ({p.words})"
        for p in r.pending)]))


def render_json(rows: Iterable[Row], unreachable: Iterable[UnreachableNode] = ()) -> str:
    doc: dict[str, object] = {"format_version": JSON_FORMAT_VERSION, "instances": [asdict(r) for r in rows]}
    lost = [u.to_json() for u in unreachable]
    if lost:  # only when some node could not be reached: the usual document stays as it was
        doc["unreachable"] = lost
    return json.dumps(doc, indent=2, sort_keys=True)

