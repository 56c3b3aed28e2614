"""The planner: desired state + actual state -> Plan. A pure function.

`make_plan` reads no clock, file or socket and sorts everything by name, so the same inputs give the
same plan byte for byte. Decisions, in order:

1. Records per instance. An instance with live processes on two nodes (an interrupted migration)
   keeps the best one (running > paused > unknown > shutdown > postmigrate > inmigrate; ties prefer
   the desired node) and stops the others (Reason.DUPLICATE; an INMIGRATE target is always the one
   stopped when the source runs). Two copies both running/paused is a SPLIT_BRAIN error: no choice
   is safe. Records without a process are ignored when another record has one.
2. The run strategy (model.RunStrategy) says whether it should run: Always restarts after a guest
   power-off and a crash, RerunOnFailure after a crash only (a guest power-off, even with QEMU kept
   alive in SHUTDOWN, is left alone until the spec differs from the record: an edit made since is a new
   intent, Reason.CHANGED_SINCE_POWEROFF), Once only starts instances that have no record, Manual is
   never started or stopped (drift goes to `pending` with Reason.MANUAL), Halted stops running ones.
3. For running instances, the policy table (planner.policy) classifies changed fields. Restart-forcing
   changes restart it (or stay pending under UpdatePolicy.PENDING). A node change migrates it (mode
   from spec.migration.mode). Both at once: one RESTART from the old node onto the new one
   (Reason.RELOCATE: stop on A, then start on B; a live migration cannot change the device set).
   Under PENDING, a node change still migrates (with the recorded config) and the changes stay pending.
4. A powered-off guest whose QEMU lives on (state SHUTDOWN) restarted with an unchanged spec on the
   same node is marked `in_place` (system_reset + cont, no new process).
5. Records no manifest declares are orphans: stopped only when pruning is on; `protect: true` ones
   never. `protect: true` also makes a Halted stop of a running instance an error (prevent_destroy);
   restarts and migrations of protected instances are allowed (the instance stays up).
6. Unscheduled instances go to the node with the most free memory (placement); capacity and phases
   follow (placement module). Instances with no `node` that already have a record stay where they are.
   A start that needs a disk, VNC display, MAC or tap another instance's stop releases comes a phase
   later (planner.handoff).
7. Where an instance stays as it is but its record differs in fields that need no restart (protect,
   labels, run strategy, ...), an UPDATE action rewrites the record in place (policy.record_spec), so
   prune, status and the next plan see what was applied. Memory and vCPUs within the limits the running
   QEMU started with (maxMemory, maxVcpus) are live: the UPDATE makes them in QEMU first
   (Reason.LIVE_UPDATE). A mix of live and restart-forcing changes is a restart, unless the restart part
   is pending (UpdatePolicy.PENDING): then the live part is applied now. Manual instances: pending.
8. A migration whose target could not bind the instance's VNC display (nodes sharing an address, or a
   live holder there) is an error (planner.binds), not a launch that fails at apply time.
9. A process proved ours whose QMP does not answer (UNKNOWN, `qmp_unresponsive`) can only be stopped
   by signal: a Halted one is stopped so (Reason.QMP_UNRESPONSIVE, `by_signal`) under `force` (apply
   --force); without it, a warning says exactly that --force would. Anything else about it is left out
   of the plan (nothing can be asked of it), as is an UNKNOWN whose record is unreadable.
10. While a node is unreachable (actual.unreachable), the instances declared on it and those running on
   no reachable node are held: no action, a `held` line instead (planner.reach).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from reconciler.actual import ActualInstance, ActualState, RunState, StopCause
from reconciler.model import DesiredState, InstanceSpec, NodeSpec, RunStrategy, UpdatePolicy
from reconciler.planner import binds, handoff, placement, reach
from reconciler.planner.actions import (
    Action,
    ActionKind,
    FieldChange,
    Held,
    Orphan,
    OrphanFate,
    PendingChange,
    Plan,
    PlanProblem,
    ProblemKind,
    Reason,
)
from reconciler.planner.diff import as_json, diff_specs, restart_forcing
from reconciler.planner.policy import record_spec

_RANK = {
    RunState.RUNNING: 0, RunState.PAUSED: 1, RunState.UNKNOWN: 2, RunState.SHUTDOWN: 3,
    RunState.POSTMIGRATE: 4, RunState.INMIGRATE: 5,
}
_UP = frozenset({RunState.RUNNING, RunState.PAUSED})
_KEEPS_RUNNING = frozenset({RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE})
UNPLACED = ""  # Action.node of a start still waiting for placement


@dataclass(slots=True)
class _Outcome:
    """What one instance contributes to the plan (mutable while the planner collects it)."""

    moves: list[placement.Move] = field(default_factory=list)
    unplaced: list[Action] = field(default_factory=list)
    pending: list[PendingChange] = field(default_factory=list)
    orphans: list[Orphan] = field(default_factory=list)
    errors: list[PlanProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)


def make_plan(
    desired: DesiredState,
    actual: ActualState,
    *,
    prune: bool | None = None,
    targets: frozenset[str] | None = None,
    allow_empty: bool = False,
    force: bool = False,
    usage: Mapping[str, int] | None = None,
) -> Plan:
    """Plan what makes `actual` match `desired`. `prune` overrides desired.prune; `targets` limits
    the plan to those instance names; `allow_empty` lifts the guard against pruning everything; `force`
    (apply --force) lets a Halted instance whose QMP does not answer be stopped by signal. `usage`: the
    memory in use per node, as `current_usage(actual.instances, desired.instances)` says, when the
    caller keeps it up to date (the watch daemon's replan); with `targets`, only their records are read."""
    prune_on = desired.prune if prune is None else prune
    records: dict[str, list[ActualInstance]] = defaultdict(list)
    for rec in actual.instances:
        if targets is None or rec.name in targets:
            records[rec.name].append(rec)
    out = _Outcome()
    if targets is not None:
        for name in sorted(targets - desired.instances.keys() - records.keys()):
            out.errors.append(PlanProblem(ProblemKind.UNKNOWN_TARGET, f"instance {name}",
                                          "--target names no declared or discovered instance"))
    if prune_on and not desired.instances and not allow_empty:
        out.errors.append(PlanProblem(
            ProblemKind.EMPTY_MANIFESTS, "manifests",
            "no instances declared while pruning is on: this would stop every instance "
            "(use --allow-empty if that is intended)",
        ))
    unreachable = {u.node: u for u in actual.unreachable}
    names = (sorted(n for n in targets if n in desired.instances or n in records) if targets is not None
             else sorted(desired.instances.keys() | records.keys()))  # a few targets cost a few lookups
    for name in names:
        recs = records.get(name, [])
        spec = desired.instances.get(name)
        hold = reach.held(spec, recs, unreachable) if spec is not None and unreachable else None
        if hold is not None:
            out.held.append(hold)
            continue
        if spec is not None and len(recs) == 1 and _settled(spec, recs[0], desired):
            continue  # the common case, decided without the general machinery
        recs.sort(key=lambda r: r.node)
        if spec is None:
            _orphan(name, recs, prune_on, out)
        else:
            _instance(spec, recs, desired.nodes, out, force)
    current = dict(usage) if usage is not None else current_usage(actual.instances, desired.instances)
    moves = _with_handoffs(_place(out, desired.nodes, current), desired, records)
    out.errors.extend(placement.capacity_problems(desired.nodes, current, moves))
    moves, cycle = placement.assign_phases(desired.nodes, current, moves)
    if cycle is not None:
        out.errors.append(cycle)
    actions = sorted((m.action for m in moves), key=lambda a: (a.phase, a.name, a.node))
    out.errors.extend(binds.migration_problems(actions, actual, desired.nodes))
    return Plan(
        actions=tuple(actions),
        pending=tuple(out.pending),
        orphans=tuple(out.orphans),
        errors=tuple(out.errors),
        warnings=tuple(out.warnings),
        prune=prune_on,
        targets=tuple(sorted(targets)) if targets is not None else None,
        unreachable=tuple(unreachable[n] for n in sorted(unreachable)),
        held=tuple(out.held),
    )


def settled(spec: InstanceSpec | None, recs: Sequence[ActualInstance], desired: DesiredState) -> bool:
    """Whether `make_plan` decides at once that the instance (its spec, its records) needs nothing, with
    no unreachable node about: then its plan depends on nothing but these (the watch daemon's replan)."""
    return spec is not None and len(recs) == 1 and _settled(spec, recs[0], desired)


def _settled(spec: InstanceSpec, rec: ActualInstance, desired: DesiredState) -> bool:
    """Up where it is declared, with the declared spec, and wanted up: `_instance` would plan nothing.

    Most instances are like this on most passes; deciding it in one expression keeps a 10,000-instance
    replan cheap for the watch daemon. Equal digests mean equal specs; unequal ones (or none known) leave
    it to the field-by-field comparison.
    """
    if rec.state not in _UP or spec.run_strategy is RunStrategy.HALTED or rec.leftovers:
        return False
    if spec.node is not None and (spec.node != rec.node or spec.node not in desired.nodes):
        return False
    known = desired.spec_hashes.get(spec.name)
    if known is not None and known == rec.spec_hash:
        return True
    return rec.spec == spec


def current_usage(recs: Iterable[ActualInstance], specs: Mapping[str, InstanceSpec]) -> dict[str, int]:
    """Memory (MiB) of the QEMUs alive on each node, as recorded (or declared, without a record)."""
    usage: dict[str, int] = defaultdict(int)
    for rec in recs:
        if rec.state.has_process:
            usage[rec.node] += _recorded_memory(rec, specs.get(rec.name))
    return usage


def _recorded_memory(rec: ActualInstance, spec: InstanceSpec | None) -> int:
    if rec.spec is not None:
        return rec.spec.memory_mib
    return spec.memory_mib if spec is not None else 0


def _place(
    out: _Outcome, nodes: Mapping[str, NodeSpec], current: dict[str, int]
) -> tuple[placement.Move, ...]:
    usage = placement.final_usage(current, out.moves)
    placed = list(out.moves)
    for action in sorted(out.unplaced, key=lambda a: (-a.memory_mib, a.name)):
        move, problem = placement.place(action, nodes, usage)
        if move is not None:
            placed.append(move)
        if problem is not None:
            out.errors.append(problem)
    return tuple(placed)


def _with_handoffs(moves: tuple[placement.Move, ...], desired: DesiredState,
                   records: Mapping[str, list[ActualInstance]]) -> tuple[placement.Move, ...]:
    """Say what each new process takes and each stopped one frees (planner.handoff), for the phases."""
    if not any(m.action.kind in (ActionKind.STOP, ActionKind.RESTART) for m in moves):
        return moves
    out = []
    for m in moves:
        a = m.action
        relaunch = a.kind is ActionKind.START or (a.kind is ActionKind.RESTART and not a.in_place)
        takes: frozenset[str] = frozenset()
        frees: frozenset[str] = frozenset()
        spec = desired.instances.get(a.name)
        if relaunch and spec is not None:
            takes = handoff.held(spec, desired.nodes.get(a.node))
        if a.kind is ActionKind.STOP or (a.kind is ActionKind.RESTART and not a.in_place):
            where = a.source_node or a.node
            rec = next((r for r in records.get(a.name, ()) if r.node == where), None)
            if rec is not None and rec.spec is not None:
                frees = handoff.held(rec.spec, desired.nodes.get(where))
        out.append(replace(m, takes=takes, frees=frees) if takes or frees else m)
    return tuple(out)


# --- orphans -------------------------------------------------------------------------------------


def _orphan(name: str, recs: list[ActualInstance], prune_on: bool, out: _Outcome) -> None:
    for rec in recs:
        if not rec.state.has_process:
            continue  # a record of a stopped instance: nothing to stop
        protected = rec.spec is not None and rec.spec.protect
        if protected:
            fate = OrphanFate.PROTECTED
        elif prune_on:
            fate = OrphanFate.STOP
            out.moves.append(_stop(rec, Reason.PRUNED, None))
        else:
            fate = OrphanFate.WOULD_STOP
        out.orphans.append(Orphan(name, rec.node, rec.state.value, fate))


def _stop(rec: ActualInstance, reason: Reason, spec: InstanceSpec | None, *,
          by_signal: bool = False) -> placement.Move:
    action = Action(rec.name, ActionKind.STOP, reason, rec.node, by_signal=by_signal)
    return placement.Move(action, ((rec.node, -_recorded_memory(rec, spec)),))


# --- declared instances --------------------------------------------------------------------------


def _resolve(
    recs: list[ActualInstance], want_node: str | None
) -> tuple[ActualInstance | None, list[ActualInstance], PlanProblem | None]:
    """(primary record, live duplicates to stop, split-brain error)."""
    alive = [r for r in recs if r.state.has_process]
    if not alive:
        dead = sorted(recs, key=lambda r: (r.node != want_node, -(r.started_at or 0.0), r.node))
        return (dead[0] if dead else None), [], None
    alive.sort(key=lambda r: (_RANK[r.state], r.node != want_node, r.node))
    best = alive[0]
    if len(alive) > 1 and alive[1].state is best.state and best.state in _UP | {RunState.UNKNOWN}:
        nodes = ", ".join(sorted(r.node for r in alive if r.state is best.state))
        return None, [], PlanProblem(
            ProblemKind.SPLIT_BRAIN, f"instance {best.name}",
            f"{best.state.value} on several nodes at once ({nodes}); refusing to choose one",
        )
    return best, alive[1:], None


def _instance(spec: InstanceSpec, recs: list[ActualInstance], nodes: Mapping[str, NodeSpec],
              out: _Outcome, force: bool) -> None:
    primary, duplicates, split = _resolve(recs, spec.node)
    if split is not None:
        out.errors.append(split)
        return
    if spec.node is not None and spec.node not in nodes:
        out.errors.append(PlanProblem(ProblemKind.UNKNOWN_NODE, f"instance {spec.name}",
                                      f"node {spec.node} is not declared"))
        return
    for dup in duplicates:
        out.moves.append(_stop(dup, Reason.DUPLICATE, spec))
    if primary is None:
        if spec.run_strategy in _KEEPS_RUNNING or spec.run_strategy is RunStrategy.ONCE:
            _start(spec, spec.node, Reason.NEW, (), out)
        return
    state, cause = primary.state, primary.stop_cause
    if state is RunState.UNKNOWN:
        _unresponsive(spec, primary, force, out)
    elif state in _UP:
        _running(spec, primary, nodes, out)
    elif state is RunState.SHUTDOWN or (state is RunState.STOPPED and cause is StopCause.GUEST):
        _powered_off(spec, primary, nodes, out)
    elif state in (RunState.INMIGRATE, RunState.POSTMIGRATE):
        _stranded(spec, primary, nodes, out)
    elif spec.run_strategy in _KEEPS_RUNNING:  # no process: crashed, stale or stopped
        _start(spec, _sticky_node(spec, primary, nodes), _gone_reason(primary), _changes(spec, primary), out,
               clean_stale=state is RunState.STALE)
    elif state is not RunState.STALE:  # left stopped: the record still follows the manifests
        _record_update(spec, primary, out)


def _gone_reason(rec: ActualInstance) -> Reason:
    """Why an instance with no process is started again: what discovery found of its end."""
    if rec.state is RunState.CRASHED or rec.stop_cause is StopCause.CRASH:
        return Reason.CRASHED
    if rec.state is RunState.STALE:
        return Reason.PIDFILE_OTHER if rec.pidfile_foreign else Reason.STALE_PIDFILE
    if rec.stop_cause is StopCause.KILLED:
        return Reason.STOPPED_OUTSIDE
    return Reason.NOT_RUNNING


def _sticky_node(spec: InstanceSpec, rec: ActualInstance, nodes: Mapping[str, NodeSpec]) -> str | None:
    """Where an instance (re)starts: its declared node, else where its record is (if that node exists)."""
    if spec.node is not None:
        return spec.node
    return rec.node if rec.node in nodes else None


def _changes(spec: InstanceSpec, rec: ActualInstance) -> tuple[FieldChange, ...]:
    return diff_specs(rec.spec, spec, rec.boot_spec) if rec.spec is not None else ()


def _node_change(old: str, new: str) -> tuple[FieldChange, ...]:
    return () if old == new else (FieldChange("node", as_json(old), as_json(new), False),)


def _start(spec: InstanceSpec, node: str | None, reason: Reason, changes: tuple[FieldChange, ...],
           out: _Outcome, *, clean_stale: bool = False) -> None:
    action = Action(spec.name, ActionKind.START, reason, node or UNPLACED, changes=changes,
                    clean_stale=clean_stale, memory_mib=spec.memory_mib, extra_args=spec.extra_args)
    if node is None:
        out.unplaced.append(action)
    else:
        out.moves.append(placement.Move(action, ((node, spec.memory_mib),)))


def _restart(spec: InstanceSpec, rec: ActualInstance, node: str, reason: Reason,
             changes: tuple[FieldChange, ...], out: _Outcome, *, in_place: bool = False) -> None:
    old_mib = _recorded_memory(rec, spec)
    action = Action(spec.name, ActionKind.RESTART, reason, node,
                    source_node=rec.node if node != rec.node else None,
                    changes=_node_change(rec.node, node) + changes, in_place=in_place,
                    memory_mib=spec.memory_mib, extra_args=() if in_place else spec.extra_args)
    if node == rec.node:
        deltas: tuple[tuple[str, int], ...] = ((node, spec.memory_mib - old_mib),)
    else:
        deltas = ((rec.node, -old_mib), (node, spec.memory_mib))
    out.moves.append(placement.Move(action, deltas))


def _running(spec: InstanceSpec, rec: ActualInstance, nodes: Mapping[str, NodeSpec], out: _Outcome) -> None:
    strategy = spec.run_strategy
    if strategy is RunStrategy.HALTED:
        if spec.protect:
            out.errors.append(PlanProblem(ProblemKind.PROTECTED, f"instance {spec.name}",
                                          f"protect: true; run strategy Halted would stop it on {rec.node}"))
        else:
            out.moves.append(_stop(rec, Reason.WANTED_STOPPED, spec))
        return
    if rec.spec is None:
        out.warnings.append(f"instance {spec.name} on {rec.node}: applied record unreadable; "
                            "changes cannot be detected")
    changes = _changes(spec, rec)
    target = spec.node or rec.node
    forcing = restart_forcing(changes)
    held = tuple(c for c in changes if c.forces_restart)  # the rest takes effect without a new QEMU
    if strategy is RunStrategy.MANUAL:  # live changes too are left to the person who runs it
        manual = held + tuple(c for c in changes if c.live)
        if manual or target != rec.node:
            out.pending.append(PendingChange(spec.name, rec.node, Reason.MANUAL,
                                             _node_change(rec.node, target) + manual))
        _record_update(spec, rec, out)
        return
    if forcing and spec.update_policy is UpdatePolicy.PENDING:
        out.pending.append(PendingChange(spec.name, rec.node, Reason.UPDATE_PENDING, held))
        forcing = False
    live = rec.state is RunState.RUNNING  # a paused guest cannot answer the balloon
    if forcing:
        reason = Reason.SPEC_CHANGED if target == rec.node else Reason.RELOCATE
        _restart(spec, rec, target, reason, changes, out)
    elif target != rec.node:
        mib = _recorded_memory(rec, spec)
        action = Action(spec.name, ActionKind.MIGRATE, Reason.NODE_CHANGED, target, source_node=rec.node,
                        changes=_node_change(rec.node, target), migration_mode=spec.migration.mode,
                        max_bandwidth=spec.migration.max_bandwidth, memory_mib=mib)
        out.moves.append(placement.Move(action, ((rec.node, -mib), (target, mib))))
    else:
        _record_update(spec, rec, out, live=live)


def _record_update(spec: InstanceSpec, rec: ActualInstance, out: _Outcome, *, live: bool = False) -> None:
    """The record kept where the instance stays, rewritten with the changes that need no new process
    (ActionKind.UPDATE), so that prune sees `protect`, status sees the applied spec, and the next plan
    starts from what was applied. Nothing when the record already says it (or cannot be read).

    `live` (a running QEMU): the live changes (memory, vCPUs within the limits it started with) are made
    in it first (Reason.LIVE_UPDATE); their memory counts on the node as a start's would. What a live
    change killed halfway left in QEMU (rec.leftovers) makes a live update too, even with the spec as
    recorded (Reason.LIVE_LEFTOVERS): it brings QEMU back to the spec."""
    if rec.spec is None:
        return
    updated = record_spec(rec.spec, spec, rec.node, live=live, boot=rec.boot_spec)
    leftovers = rec.leftovers if live else ()
    if updated == rec.spec and not leftovers:
        return
    node = (FieldChange("node", as_json(rec.spec.node), as_json(updated.node), False),) \
        if rec.spec.node != updated.node else ()
    changes = tuple(c for c in _changes(spec, rec) if not c.forces_restart and (live or not c.live))
    in_qemu = any(c.live for c in changes)
    reason = Reason.LIVE_UPDATE if in_qemu else Reason.LIVE_LEFTOVERS if leftovers else Reason.RECORD_ONLY
    in_qemu = in_qemu or bool(leftovers)
    grow = updated.memory_mib - rec.spec.memory_mib
    action = Action(spec.name, ActionKind.UPDATE, reason, rec.node, changes=node + changes,
                    memory_mib=updated.memory_mib if in_qemu else 0, leftovers=leftovers)
    out.moves.append(placement.Move(action, ((rec.node, grow),) if grow else ()))


def _unresponsive(spec: InstanceSpec, rec: ActualInstance, force: bool, out: _Outcome) -> None:
    where = f"instance {spec.name} on {rec.node}"
    if not rec.qmp_unresponsive or spec.run_strategy is not RunStrategy.HALTED:
        out.warnings.append(f"{where}: state unknown (QMP did not answer); left out of the plan")
    elif spec.protect:
        out.errors.append(PlanProblem(ProblemKind.PROTECTED, f"instance {spec.name}",
                                      f"protect: true; run strategy Halted would stop it on {rec.node}"))
    elif force:
        out.moves.append(_stop(rec, Reason.QMP_UNRESPONSIVE, spec, by_signal=True))
    else:
        out.warnings.append(f"{where}: QMP unresponsive; --force would stop it by signal (SIGTERM, then "
                            "SIGKILL)")


def _powered_off(
    spec: InstanceSpec, rec: ActualInstance, nodes: Mapping[str, NodeSpec], out: _Outcome
) -> None:
    strategy = spec.run_strategy
    alive = rec.state.has_process  # SHUTDOWN: QEMU kept alive by -no-shutdown
    if strategy is RunStrategy.ALWAYS:
        reason = Reason.GUEST_POWERED_OFF
    elif strategy is RunStrategy.RERUN_ON_FAILURE and rec.spec is not None and rec.spec != spec:
        reason = Reason.CHANGED_SINCE_POWEROFF  # the record is what it last ran with: an edit since
    elif strategy is RunStrategy.HALTED and alive:
        out.moves.append(_stop(rec, Reason.WANTED_STOPPED, spec))  # the stop updates the kept record
        return
    else:
        _record_update(spec, rec, out)  # so that a later edit is told from this one
        return
    changes = _changes(spec, rec)
    if not alive:
        _start(spec, _sticky_node(spec, rec, nodes), reason, changes, out)
        return
    target = spec.node or rec.node
    # A guest that is off cannot answer the balloon or bring CPUs online: live changes need a new process.
    in_place = target == rec.node and not restart_forcing(changes) and not any(c.live for c in changes)
    _restart(spec, rec, target, reason, changes, out, in_place=in_place)


def _stranded(spec: InstanceSpec, rec: ActualInstance, nodes: Mapping[str, NodeSpec], out: _Outcome) -> None:
    strategy = spec.run_strategy
    if strategy is RunStrategy.HALTED:
        out.moves.append(_stop(rec, Reason.WANTED_STOPPED, spec))
    elif strategy is RunStrategy.MANUAL:
        out.warnings.append(f"instance {spec.name} on {rec.node}: {rec.state.value} after an interrupted "
                            "migration; run strategy Manual leaves it to you")
    else:
        _restart(spec, rec, spec.node or rec.node, Reason.STRANDED_MIGRATION, _changes(spec, rec), out)
