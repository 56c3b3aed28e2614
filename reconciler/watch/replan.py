"""The daemon's replan: `make_plan` limited to the instances that can have changed since the last plan.

A full plan of 10,000 instances walks every one of them (~30 ms), though after one edit all but a few
are exactly as they were. `make_plan` decides most instances at once (`planner.plan.settled`: up where
declared, with the declared spec, wanted up), from nothing but the instance's spec, its records and the
set of nodes. So once a plan is made, the next one only needs the instances that were not settled then,
plus those whose spec or records are other objects now (the manifest cache and the incremental discovery
keep the objects of what did not change; a spec rebuilt equal counts as unchanged): `make_plan(...,
targets=those)` plans them, and every other instance would have planned nothing. The plan is made in
full instead when that argument does not hold: the first time, when the nodes, the pruning switch or the
unreachable nodes are not the same, or when the last plan had an error that is not about one instance
(capacity, an empty tree, ordering). The memory in use per node (for placement and capacity) is kept up
to date the same way. A property test (tests/watch/test_replan.py) checks that the result equals the
full plan after any sequence of changes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection
from dataclasses import dataclass, replace

from reconciler.actual import ActualInstance, ActualState
from reconciler.model import DesiredState
from reconciler.planner import Plan, make_plan
from reconciler.planner.plan import current_usage, settled


@dataclass(slots=True)
class _Last:
    """What the last plan was made from."""

    desired: DesiredState
    actual: ActualState
    prune: bool
    unsettled: frozenset[str]  # names the last plan did not decide at once
    recs: dict[str, tuple[ActualInstance, ...]]  # every name's records in `actual`
    usage: Counter[str]  # memory in use per node (planner.plan.current_usage of `actual`)


class Replanner:
    """Plans as `make_plan(desired, actual, prune=prune)` would, looking only at what may have moved."""

    def __init__(self) -> None:
        self._last: _Last | None = None
        self.last_targets: int | None = None  # instances the last plan looked at (None: all)

    def plan(self, desired: DesiredState, actual: ActualState, prune: bool | None = None, *,
             actual_changed: Collection[str] | None = None) -> Plan:
        """`actual_changed`: the instances whose records may differ from the last call's (the incremental
        discovery's look); None: find them by comparing the objects."""
        prune_on = desired.prune if prune is None else prune
        last = self._last
        changed = self._changed(last, desired, actual, prune_on, actual_changed) if last is not None else None
        if last is None or changed is None:
            plan = make_plan(desired, actual, prune=prune)
            recs: dict[str, list[ActualInstance]] = defaultdict(list)
            for rec in actual.instances:
                recs[rec.name].append(rec)
            names: Collection[str] = desired.instances.keys() | recs.keys()
            last = _Last(desired, actual, prune_on, frozenset(), {n: tuple(r) for n, r in recs.items()},
                         Counter(current_usage(actual.instances, desired.instances)))
            self.last_targets = None
        else:
            names = targets = frozenset(changed | last.unsettled)
            found: dict[str, list[ActualInstance]] = defaultdict(list)
            for rec in actual.instances:
                if rec.name in targets:
                    found[rec.name].append(rec)
            for name in targets:  # the memory in use, moved by what changed
                last.usage.subtract(current_usage(last.recs.get(name, ()), last.desired.instances))
                new = tuple(found.get(name, ()))
                last.usage.update(current_usage(new, desired.instances))
                if new:
                    last.recs[name] = new
                else:
                    last.recs.pop(name, None)
            usage = {node: mib for node, mib in last.usage.items() if mib}
            names = frozenset(n for n in targets if n in desired.instances or n in found)  # not vanished
            plan = replace(make_plan(desired, actual, prune=prune, targets=names, usage=usage),
                           targets=None)
            last.desired, last.actual = desired, actual
            self.last_targets = len(targets)
        last.unsettled = frozenset(n for n in names if not settled(desired.instances.get(n),
                                                                   last.recs.get(n, ()), desired))
        global_errors = any(not e.subject.startswith("instance ") for e in plan.errors)
        self._last = None if global_errors or actual.unreachable else last
        return plan

    @staticmethod
    def _changed(last: _Last, desired: DesiredState, actual: ActualState, prune_on: bool,
                 actual_changed: Collection[str] | None) -> set[str] | None:
        """The instances whose spec or records may have changed; None: plan everything."""
        if prune_on != last.prune or actual.unreachable or (
                desired.nodes is not last.desired.nodes and desired.nodes != last.desired.nodes):
            return None
        before = last.desired.instances
        # A rebuilt file makes new objects of its unchanged instances too: those compare equal.
        changed = {n for n, spec in desired.instances.items()
                   if (old := before.get(n)) is not spec and old != spec}
        changed.update(n for n in before if n not in desired.instances)
        if actual_changed is not None:
            changed.update(actual_changed)
            return changed
        kept = {id(i) for i in actual.instances}
        changed.update(i.name for i in last.actual.instances if id(i) not in kept)  # gone or replaced
        was = {id(i) for i in last.actual.instances}
        changed.update(i.name for i in actual.instances if id(i) not in was)  # new or replaced
        return changed
