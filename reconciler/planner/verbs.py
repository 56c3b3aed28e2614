"""Imperative verbs as plans: `reconciler start|stop|restart|reboot NAME...` -> one action per name.

GitOps leaves moments it does not cover: starting or stopping a Manual instance, rebooting without a spec
change, recovering. Each verb becomes an ordinary Plan of the planner's actions, so it is shown before it
runs, confirmed, carried out by the executor under the node locks, with the same intents and crash safety
as apply. Pure, like the planner: desired + actual in, plan out.

What each verb does, by what runs now:

  start    nothing live -> start (declared node, else where its record is, else placed);
           guest powered off, QEMU alive -> restart in place (a new process if the spec changed);
           running or paused -> nothing to do.
  stop     every live copy -> stop (the record stays, marked stopped by the reconciler);
           nothing live -> nothing to do. `protect: true` refuses.
  restart  live -> a new QEMU process with the manifest's spec (on the declared node); nothing live -> start.
  reboot   running, paused or powered off -> system_reset + cont of the same process; otherwise an error.

A verb never contradicts the manifests silently: when the next reconcile would undo it (an Always or
RerunOnFailure instance stopped, a Halted one started, an orphan kept up while pruning is on), the plan's
warnings say so. Manual instances get no such warning: the reconciler leaves them to people.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from reconciler.actual import ActualInstance, ActualState, RunState
from reconciler.errors import InstanceNotFound
from reconciler.model import DesiredState, InstanceSpec, RunStrategy
from reconciler.planner import placement, reach

# The planner's own building blocks, so a verb's actions are exactly the ones apply would build.
from reconciler.planner.actions import Action, ActionKind, Plan, PlanProblem, ProblemKind, Reason
from reconciler.planner.diff import restart_forcing
from reconciler.planner.plan import (
    _changes,
    _Outcome,
    _place,
    _resolve,
    _restart,
    _start,
    _sticky_node,
    _stop,
    current_usage,
)
from reconciler.values import Value


class Verb(enum.StrEnum):
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    REBOOT = "reboot"


@dataclass(frozen=True, slots=True, eq=False, repr=False)  # repr, ==, hash: Value's
class VerbPlan(Value):
    """The plan of a verb (start, stop, ...), with notes on instances already as asked."""

    plan: Plan
    notes: tuple[str, ...] = ()  # instances already as asked, one line each: nothing to do for them


_UP = frozenset({RunState.RUNNING, RunState.PAUSED})
_STRANDED = frozenset({RunState.INMIGRATE, RunState.POSTMIGRATE})
_KEEPS_RUNNING = frozenset({RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE})
NEXT_RECONCILE = "the next reconcile (apply, or the watch daemon)"


def verb_plan(verb: Verb, names: Iterable[str], desired: DesiredState, actual: ActualState) -> VerbPlan:
    """The plan of `verb` on `names`. InstanceNotFound for a name neither declared nor on any node."""
    wanted = sorted(set(names))
    for name in wanted:
        if name not in desired.instances and not actual.find(name):
            raise InstanceNotFound(name)
    out = _Outcome()
    notes: list[str] = []
    unreachable = {u.node: u for u in actual.unreachable}
    for name in wanted:
        spec = desired.instances.get(name)
        recs = sorted(actual.find(name), key=lambda r: r.node)
        hold = reach.held_name(name, spec.node if spec is not None else None, recs, unreachable,
                               verb is not Verb.STOP)
        if hold is not None:
            _error(out, name, hold.reason)
            continue
        if verb is Verb.STOP:
            _verb_stop(name, spec, recs, out, notes)
        elif verb is Verb.REBOOT:
            _verb_reboot(name, spec, recs, desired, out)
        else:
            _verb_up(verb, name, spec, recs, desired, out, notes)
    current = current_usage(actual.instances, desired.instances)
    moves = _place(out, desired.nodes, current)
    out.errors.extend(placement.capacity_problems(desired.nodes, current, moves))
    moves, cycle = placement.assign_phases(desired.nodes, current, moves)
    if cycle is not None:
        out.errors.append(cycle)
    actions = sorted((m.action for m in moves), key=lambda a: (a.phase, a.name, a.node))
    plan = Plan(actions=tuple(actions), errors=tuple(out.errors), warnings=tuple(out.warnings),
                unreachable=tuple(unreachable[n] for n in sorted(unreachable)))
    return VerbPlan(plan, tuple(notes))


def _error(out: _Outcome, name: str, detail: str, kind: ProblemKind = ProblemKind.REFUSED) -> None:
    out.errors.append(PlanProblem(kind, f"instance {name}", detail))


def _several(live: list[ActualInstance]) -> str:
    where = ", ".join(f"{r.node} ({r.state.value})" for r in live)
    return (f"runs on several nodes at once ({where}), left by an interrupted migration; "
            "`reconciler apply` resolves it (or `reconciler stop` stops every copy)")


def _hint_up(name: str, spec: InstanceSpec | None, desired: DesiredState, out: _Outcome) -> None:
    """The instance runs after the verb: say so if the next reconcile stops it."""
    if spec is None and desired.prune:
        out.warnings.append(f"instance {name}: not in the manifests and pruning is on: {NEXT_RECONCILE} "
                            "stops it")
    elif spec is not None and spec.run_strategy is RunStrategy.HALTED:
        out.warnings.append(f"instance {name}: run strategy Halted: {NEXT_RECONCILE} stops it again")


def _hint_down(name: str, spec: InstanceSpec | None, out: _Outcome) -> None:
    """The instance is stopped after the verb: say so if the next reconcile starts it."""
    if spec is not None and spec.run_strategy in _KEEPS_RUNNING:
        out.warnings.append(f"instance {name}: run strategy {spec.run_strategy.value}: {NEXT_RECONCILE} "
                            "starts it again (runStrategy Manual or Halted keeps it stopped)")


def _stopped_words(recs: list[ActualInstance]) -> str:
    if not recs:
        return "never started"
    return ", ".join(f"{r.state.value} on {r.node}" for r in recs)


def _verb_stop(name: str, spec: InstanceSpec | None, recs: list[ActualInstance], out: _Outcome,
               notes: list[str]) -> None:
    live = [r for r in recs if r.state.has_process]
    if not live:
        notes.append(f"{name}: already stopped ({_stopped_words(recs)}); nothing to do")
        return
    protected = spec.protect if spec is not None else any(r.spec is not None and r.spec.protect for r in live)
    if protected:
        _error(out, name, "protect: true; `reconciler stop` does not stop a protected instance "
                          "(set protect: false in its manifest first)", ProblemKind.PROTECTED)
        return
    for rec in live:
        out.moves.append(_stop(rec, Reason.REQUESTED, spec))
    _hint_down(name, spec, out)


def _verb_reboot(name: str, spec: InstanceSpec | None, recs: list[ActualInstance], desired: DesiredState,
                 out: _Outcome) -> None:
    live = [r for r in recs if r.state.has_process]
    if not live:
        _error(out, name, f"not running ({_stopped_words(recs)}); `reconciler start {name}` starts it")
        return
    if len(live) > 1:
        _error(out, name, _several(live))
        return
    rec = live[0]
    if rec.state is RunState.UNKNOWN:
        _error(out, name, f"its QEMU (pid {rec.pid}) on {rec.node} does not answer QMP, which a reboot "
                          f"needs; `reconciler restart {name}` replaces the process")
        return
    if rec.state in _STRANDED:
        _error(out, name, f"{rec.state.value} on {rec.node} after an interrupted migration; "
                          f"`reconciler restart {name}` starts it afresh")
        return
    out.moves.append(placement.Move(Action(name, ActionKind.REBOOT, Reason.REQUESTED, rec.node), ()))
    _hint_up(name, spec, desired, out)


def _verb_up(verb: Verb, name: str, spec: InstanceSpec | None, recs: list[ActualInstance],
             desired: DesiredState, out: _Outcome, notes: list[str]) -> None:
    """start and restart: the instance runs afterwards, with the manifest's spec."""
    if spec is None:
        _error(out, name, f"not declared in the manifests: there is no spec to {verb.value} it with")
        return
    if spec.node is not None and spec.node not in desired.nodes:
        _error(out, name, f"node {spec.node} is not declared", ProblemKind.UNKNOWN_NODE)
        return
    live = [r for r in recs if r.state.has_process]
    if len(live) > 1:
        _error(out, name, _several(live))
        return
    if not live:
        dead, _, _ = _resolve(recs, spec.node)
        node = spec.node if dead is None else _sticky_node(spec, dead, desired.nodes)
        changes = () if dead is None else _changes(spec, dead)
        stale = dead is not None and dead.state is RunState.STALE
        _start(spec, node, Reason.REQUESTED, changes, out, clean_stale=stale)
        _hint_up(name, spec, desired, out)
        return
    rec = live[0]
    if verb is Verb.START and rec.state in _UP:
        notes.append(f"{name}: already {rec.state.value} on {rec.node} (pid {rec.pid}); nothing to do")
        _hint_up(name, spec, desired, out)
        return
    if verb is Verb.START and rec.state is RunState.UNKNOWN:
        _error(out, name, f"its QEMU (pid {rec.pid}) on {rec.node} runs but does not answer QMP; "
                          f"`reconciler restart {name}` replaces the process")
        return
    if verb is Verb.START and rec.state in _STRANDED:
        _error(out, name, f"{rec.state.value} on {rec.node} after an interrupted migration; "
                          f"`reconciler restart {name}` starts it afresh")
        return
    target = spec.node or rec.node
    changes = _changes(spec, rec)
    # start of a powered-off guest whose QEMU lives on: reset it in place, as apply would
    in_place = verb is Verb.START and target == rec.node and not restart_forcing(changes)
    _restart(spec, rec, target, Reason.REQUESTED, changes, out, in_place=in_place)
    _hint_up(name, spec, desired, out)

